"""Restore archives (file restores delivered as tar or zip) expire: their repository export is
deleted ``keep`` after the restore completed, and the restore says so. GC frees their chunks.

Each attempt writes an export of its own, so the exports of every attempt go, and those of
restores that failed or were cancelled too (an attempt may have committed its archive and then
lost its lease): GC counts exports as live, so none may be left behind."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.domain.jobs import RestoreState
from app.jobs.job_params import attempt_export_ids
from app.jobs.models import Job
from app.restores.models import Restore
from app.retention.loop import _QuietUntilMigrated
from app.retention.onsite import OnsiteRepository

log = logging.getLogger(__name__)

ENDED = [RestoreState.SUCCEEDED.value, RestoreState.FAILED.value, RestoreState.CANCELLED.value]


class ArchiveExpiryLoop(_QuietUntilMigrated):
    name = "archive-expiry"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        onsite: OnsiteRepository,
        clock: Clock,
        keep: timedelta,
        interval_s: float = 3600.0,
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.onsite = onsite
        self.clock = clock
        self.keep = keep
        self.last_expired = 0

    async def tick(self) -> None:
        now = self.clock.now()
        async with self.sessionmaker() as session:
            due = (
                await session.execute(
                    select(Restore.id, Restore.result).where(
                        Restore.type == "files",
                        Restore.target == "archive",
                        Restore.state.in_(ENDED),
                        Restore.completed_at < now - self.keep,
                    )
                )
            ).tuples()
            expired = [rid for rid, result in due if not result.get("archive_expired")]
            rows = await session.execute(
                select(Job.restore_id, func.max(Job.attempt))
                .where(Job.restore_id.in_(expired))
                .group_by(Job.restore_id)
            )
            attempts = {restore_id: attempt for restore_id, attempt in rows.tuples()}
        self.last_expired = 0
        for restore_id in expired:
            for export_id in attempt_export_ids(restore_id, attempts.get(restore_id) or 1):
                await self.onsite.delete_export(export_id)
            async with self.sessionmaker.begin() as session:
                restore = await session.get(Restore, restore_id)
                if restore is not None:
                    restore.result = {
                        **restore.result,
                        "archive_expired": True,
                        "archive_expired_at": now.isoformat(),
                    }
            self.last_expired += 1
        if self.last_expired:
            log.info("archive expiry: %d restore archive(s) removed", self.last_expired)
