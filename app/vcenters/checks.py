"""Connection test of a registered vCenter, recorded on the vCenter.

The vCenter call happens outside any catalog transaction: it may take the whole timeout, and
on SQLite an open write transaction would block every other writer for that long.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.crypto import SecretBox, SecretBoxError
from app.errors import NotFound
from app.vadp.errors import VCenterError
from app.vadp.types import AboutInfo
from app.vcenters.gateway import VCenterGateway
from app.vcenters.models import VCenter
from app.vcenters.repository import VCenterRepository
from app.vcenters.schemas import ConnectionProblem, VCenterTestResult
from app.vcenters.service import endpoint_for

log = logging.getLogger(__name__)


def record_success(vcenter: VCenter, about: AboutInfo, clock: Clock) -> None:
    vcenter.connection_status = "connected"
    vcenter.last_error_kind = None
    vcenter.last_error = None
    vcenter.last_checked_at = clock.now()
    vcenter.product = about.full_name
    vcenter.api_version = about.version
    vcenter.instance_uuid = about.instance_uuid


def record_failure(vcenter: VCenter, kind: str, message: str, clock: Clock) -> None:
    vcenter.connection_status = "error"
    vcenter.last_error_kind = kind
    vcenter.last_error = message
    vcenter.last_checked_at = clock.now()


class VCenterChecker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        gateway: VCenterGateway,
        box: SecretBox,
        clock: Clock,
        timeout_s: float,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.gateway = gateway
        self.box = box
        self.clock = clock
        self.timeout_s = timeout_s

    async def check(self, vcenter_id: uuid.UUID) -> VCenterTestResult:
        async with self.sessionmaker() as session:
            vcenter = await VCenterRepository(session).get(vcenter_id, None)
            if vcenter is None:
                raise NotFound(f"vCenter {vcenter_id} does not exist.")
            name = vcenter.name
            try:
                endpoint = endpoint_for(vcenter, self.box, self.timeout_s)
            except SecretBoxError as exc:
                unreadable: str | None = str(exc)
            else:
                unreadable = None
        # Outside the read transaction: on SQLite a second transaction opened while the
        # first is still open would wait for this very task.
        if unreadable is not None:
            return await self._finish(vcenter_id, None, ("credentials_unreadable", unreadable))
        try:
            about = await self.gateway.test_connection(endpoint)
        except VCenterError as exc:
            log.warning("vCenter %s (%s) connection test failed: %s", name, vcenter_id, exc.message)
            return await self._finish(vcenter_id, None, (exc.kind.value, exc.message))
        return await self._finish(vcenter_id, about, None)

    async def _finish(
        self, vcenter_id: uuid.UUID, about: AboutInfo | None, error: tuple[str, str] | None
    ) -> VCenterTestResult:
        async with self.sessionmaker.begin() as session:
            vcenter = await VCenterRepository(session).get(vcenter_id, None)
            if vcenter is None:
                raise NotFound(f"vCenter {vcenter_id} was deleted during the test.")
            if about is not None:
                record_success(vcenter, about, self.clock)
                return VCenterTestResult(
                    ok=True, checked_at=self.clock.now(), product=about.full_name, api_version=about.version
                )
            assert error is not None
            record_failure(vcenter, error[0], error[1], self.clock)
            return VCenterTestResult(
                ok=False,
                checked_at=self.clock.now(),
                error=ConnectionProblem(kind=error[0], message=error[1]),
            )
