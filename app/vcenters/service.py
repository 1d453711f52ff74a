"""Registering vCenters and keeping their credentials safe."""

from __future__ import annotations

import json
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.crypto import SecretBox
from app.errors import Conflict, InvalidInput, NotFound
from app.pagination import PageRequest
from app.tenants.repository import TenantRepository
from app.vadp.types import VCenterEndpoint
from app.vcenters.models import VCenter
from app.vcenters.repository import VCenterRepository
from app.vcenters.schemas import VCenterCreate, VCenterUpdate


def seal_credentials(box: SecretBox, username: str, password: str) -> bytes:
    return box.encrypt(json.dumps({"username": username, "password": password}).encode())


def endpoint_for(vcenter: VCenter, box: SecretBox, timeout_s: float) -> VCenterEndpoint:
    creds = json.loads(box.decrypt(vcenter.credentials_encrypted))
    return VCenterEndpoint(
        url=vcenter.url,
        username=creds["username"],
        password=creds["password"],
        verify_tls=vcenter.verify_tls,
        timeout_s=timeout_s,
    )


class VCenterService:
    def __init__(self, session: AsyncSession, clock: Clock, box: SecretBox) -> None:
        self.repo = VCenterRepository(session)
        self.tenants = TenantRepository(session)
        self.clock = clock
        self.box = box

    async def get(self, principal: Principal, vcenter_id: uuid.UUID) -> VCenter:
        vcenter = await self.repo.get(vcenter_id, principal.tenant_scope)
        if vcenter is None:
            raise NotFound(f"vCenter {vcenter_id} does not exist.")
        return vcenter

    async def list_page(
        self,
        principal: Principal,
        page: PageRequest,
        tenant_id: uuid.UUID | None = None,
        connection_status: str | None = None,
    ) -> tuple[list[VCenter], int]:
        return await self.repo.list_page(principal.tenant_scope, page, tenant_id, connection_status)

    async def register(self, principal: Principal, data: VCenterCreate) -> VCenter:
        principal.require_operator("register vCenters")
        if await self.tenants.get(data.tenant_id, None) is None:
            raise InvalidInput(f"Tenant {data.tenant_id} does not exist.", field=["body", "tenant_id"])
        await self._ensure_name_free(data.tenant_id, data.name)
        now = self.clock.now()
        vcenter = VCenter(
            id=uuid.uuid4(),
            tenant_id=data.tenant_id,
            name=data.name,
            url=data.url,
            verify_tls=data.verify_tls,
            credentials_encrypted=seal_credentials(self.box, data.username, data.password.get_secret_value()),
            credentials_updated_at=now,
            connection_status="unknown",
            created_at=now,
            updated_at=now,
        )
        await self.repo.add(vcenter)
        return vcenter

    async def update(self, principal: Principal, vcenter_id: uuid.UUID, data: VCenterUpdate) -> VCenter:
        principal.require_operator("change vCenters")
        vcenter = await self.get(principal, vcenter_id)
        now = self.clock.now()
        reconnect = False
        if data.name is not None and data.name != vcenter.name:
            await self._ensure_name_free(vcenter.tenant_id, data.name)
            vcenter.name = data.name
        if data.url is not None and data.url != vcenter.url:
            vcenter.url = data.url
            reconnect = True
        if data.verify_tls is not None and data.verify_tls != vcenter.verify_tls:
            vcenter.verify_tls = data.verify_tls
            reconnect = True
        if data.username is not None and data.password is not None:
            vcenter.credentials_encrypted = seal_credentials(
                self.box, data.username, data.password.get_secret_value()
            )
            vcenter.credentials_updated_at = now
            reconnect = True
        if reconnect:
            # The last check said nothing about the new settings.
            vcenter.connection_status = "unknown"
            vcenter.last_error_kind = None
            vcenter.last_error = None
        vcenter.updated_at = now
        return vcenter

    async def delete(self, principal: Principal, vcenter_id: uuid.UUID) -> None:
        principal.require_operator("delete vCenters")
        vcenter = await self.get(principal, vcenter_id)
        await self.repo.delete(vcenter)

    async def _ensure_name_free(self, tenant_id: uuid.UUID, name: str) -> None:
        if await self.repo.get_by_name(tenant_id, name) is not None:
            raise Conflict(f"The tenant already has a vCenter named '{name}'; choose another name.")
