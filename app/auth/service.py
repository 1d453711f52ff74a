"""Authentication of bearer keys, and the life cycle of API keys."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import tokens
from app.auth.models import ApiKey
from app.auth.principal import Principal, Role
from app.auth.repository import ApiKeyRepository
from app.auth.schemas import ApiKeyCreate
from app.clock import Clock
from app.errors import Conflict, InvalidInput, NotFound, Unauthorized
from app.pagination import PageRequest
from app.tenants.repository import TenantRepository

_TOUCH_INTERVAL = timedelta(minutes=1)


class ApiKeyService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.repo = ApiKeyRepository(session)
        self.tenants = TenantRepository(session)
        self.clock = clock

    async def authenticate(self, bearer: str | None) -> Principal:
        if not bearer:
            raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'.")
        parsed = tokens.parse(bearer)
        if parsed is None or parsed.prefix != tokens.API_KEY_PREFIX:
            raise Unauthorized("The API key is malformed; API keys start with 'vmr_'.")
        key = await self.repo.get_by_lookup_id(parsed.lookup_id)
        if key is None or not tokens.matches(parsed, key.secret_hash):
            raise Unauthorized("The API key is not valid.")
        if key.revoked_at is not None:
            raise Unauthorized("The API key was revoked; ask an operator for a new one.")
        now = self.clock.now()
        if key.last_used_at is None or key.last_used_at < now - _TOUCH_INTERVAL:
            await self.repo.touch(key.id, now, now - _TOUCH_INTERVAL)
        return Principal(key_id=key.id, role=Role(key.role), tenant_id=key.tenant_id)

    async def create(self, principal: Principal | None, data: ApiKeyCreate) -> tuple[ApiKey, str]:
        """Create a key. ``principal`` is None only for the CLI bootstrap of the first key."""
        if principal is not None:
            principal.require_operator("create API keys")
        if data.tenant_id is not None and await self.tenants.get(data.tenant_id, None) is None:
            raise InvalidInput(f"Tenant {data.tenant_id} does not exist.", field=["tenant_id"])
        issued = tokens.issue(tokens.API_KEY_PREFIX)
        key = ApiKey(
            id=uuid.uuid4(),
            name=data.name,
            role=data.role.value,
            tenant_id=data.tenant_id,
            lookup_id=issued.lookup_id,
            secret_hash=issued.secret_hash,
            created_at=self.clock.now(),
            created_by_key_id=principal.key_id if principal else None,
        )
        await self.repo.add(key)
        return key, issued.secret

    async def get(self, principal: Principal, key_id: uuid.UUID) -> ApiKey:
        key = await self.repo.get(key_id, principal.tenant_scope)
        if key is None:
            raise NotFound(f"API key {key_id} does not exist.")
        return key

    async def list_page(
        self,
        principal: Principal,
        page: PageRequest,
        tenant_id: uuid.UUID | None = None,
        role: Role | None = None,
        include_revoked: bool = False,
    ) -> tuple[list[ApiKey], int]:
        return await self.repo.list_page(
            principal.tenant_scope, page, tenant_id, role.value if role else None, include_revoked
        )

    async def revoke(self, principal: Principal, key_id: uuid.UUID) -> ApiKey:
        principal.require_operator("revoke API keys")
        key = await self.get(principal, key_id)
        if key.id == principal.key_id:
            raise Conflict("A key cannot revoke itself; use another operator key.")
        if key.revoked_at is None:
            key.revoked_at = self.clock.now()
        return key
