"""Refreshing a vCenter's inventory into the catalog.

Three short steps: claim the vCenter (compare-and-set, so replicas never sync one vCenter
twice at once) and read its endpoint; read the inventory from vCenter outside any transaction;
apply it, recompute protection and release the claim in one transaction.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.crypto import SecretBox, SecretBoxError
from app.errors import Conflict, NotFound, UpstreamError
from app.inventory.apply import apply_snapshot
from app.inventory.schemas import SyncReport
from app.policies.protection import recompute_protection
from app.vadp.errors import VCenterError
from app.vcenters.checks import record_failure, record_success
from app.vcenters.gateway import VCenterGateway
from app.vcenters.repository import VCenterRepository
from app.vcenters.service import endpoint_for

log = logging.getLogger(__name__)


class InventorySyncer:
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
        # A crashed sync must not block the next one forever.
        self.claim_ttl = timedelta(seconds=max(600.0, timeout_s * 10))

    async def sync(self, vcenter_id: uuid.UUID) -> SyncReport:
        async with self.sessionmaker.begin() as session:
            repo = VCenterRepository(session)
            vcenter = await repo.get(vcenter_id, None)
            if vcenter is None:
                raise NotFound(f"vCenter {vcenter_id} does not exist.")
            now = self.clock.now()
            if not await repo.claim_sync(vcenter_id, now, now + self.claim_ttl):
                raise Conflict(f"vCenter '{vcenter.name}' is being synced right now; try again in a minute.")
            name = vcenter.name
            try:
                endpoint = endpoint_for(vcenter, self.box, self.timeout_s)
            except SecretBoxError as exc:
                endpoint_error: str | None = str(exc)
            else:
                endpoint_error = None
        if endpoint_error is not None:
            await self._fail(vcenter_id, "credentials_unreadable", endpoint_error)
            raise UpstreamError(endpoint_error, kind="credentials_unreadable")
        try:
            snapshot = await self.gateway.read_inventory(endpoint)
        except VCenterError as exc:
            log.warning("inventory sync of vCenter %s (%s) failed: %s", name, vcenter_id, exc.message)
            await self._fail(vcenter_id, exc.kind.value, exc.message)
            raise UpstreamError(
                f"Inventory sync of vCenter '{name}' failed: {exc.message}", kind=exc.kind.value
            ) from exc
        except BaseException:
            await self._release(vcenter_id)
            raise
        async with self.sessionmaker.begin() as session:
            vcenter = await VCenterRepository(session).get(vcenter_id, None)
            if vcenter is None:
                raise NotFound(f"vCenter {vcenter_id} was deleted during the sync.")
            now = self.clock.now()
            hosts, datastores, vms = await apply_snapshot(session, vcenter, snapshot, now)
            await recompute_protection(session, vcenter.tenant_id, now)
            record_success(vcenter, snapshot.about, self.clock)
            vcenter.last_sync_at = now
            vcenter.last_sync_status = "ok"
            vcenter.sync_claimed_until = None
        log.info(
            "synced vCenter %s: %d hosts, %d datastores, %d VMs (%d new, %d gone)",
            name,
            hosts.total,
            datastores.total,
            vms.total,
            vms.added,
            vms.gone,
        )
        return SyncReport(
            vcenter_id=vcenter_id,
            synced_at=now,
            hosts=hosts,
            datastores=datastores,
            vms=vms,
            tags_available=snapshot.tags_available,
        )

    async def _fail(self, vcenter_id: uuid.UUID, kind: str, message: str) -> None:
        async with self.sessionmaker.begin() as session:
            vcenter = await VCenterRepository(session).get(vcenter_id, None)
            if vcenter is not None:
                record_failure(vcenter, kind, message, self.clock)
                vcenter.last_sync_status = "failed"
                vcenter.sync_claimed_until = None

    async def _release(self, vcenter_id: uuid.UUID) -> None:
        async with self.sessionmaker.begin() as session:
            vcenter = await VCenterRepository(session).get(vcenter_id, None)
            if vcenter is not None:
                vcenter.sync_claimed_until = None
