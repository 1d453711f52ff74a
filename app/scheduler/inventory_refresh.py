"""Refreshes the inventory of every vCenter whose last sync is older than the interval."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.errors import Conflict, NotFound, UpstreamError
from app.inventory.sync import InventorySyncer
from app.scheduler.loop import LoopService
from app.vcenters.repository import VCenterRepository

log = logging.getLogger(__name__)


class InventoryRefreshLoop(LoopService):
    name = "inventory-refresh"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        syncer: InventorySyncer,
        clock: Clock,
        sync_every_s: float,
        interval_s: float,
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.syncer = syncer
        self.clock = clock
        self.sync_every = timedelta(seconds=sync_every_s)

    async def run_once(self) -> None:
        now = self.clock.now()
        async with self.sessionmaker() as session:
            due = await VCenterRepository(session).due_for_sync(now - self.sync_every, now)
        for vcenter_id in due:
            try:
                await self.syncer.sync(vcenter_id)
            except Conflict:
                continue  # another replica is on it
            except (UpstreamError, NotFound) as exc:
                log.warning("periodic sync of vCenter %s failed: %s", vcenter_id, exc.message)
