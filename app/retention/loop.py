"""The retention and garbage-collection loops.

:class:`RetentionLoop` prunes, every tick, the VMs whose backup succeeded since its previous
tick (found by the backup jobs' ``finished_at``, looked at with an overlap of
``RECENT_OVERLAP`` so that a completion committed just after a tick's query is seen by the next
one; pruning is idempotent, so seeing a VM twice costs a few queries), and makes a full pass
over every VM with restore points (plus the orphan reconcile) at start and then every
``full_every_s``. Which VMs were seen is kept in memory only: after a restart the full pass
covers everything, and with several replicas each prunes (pruning twice is harmless).

:class:`GcLoop` runs :func:`app.chunkstore.gc` on the onsite repository every ``every``
(at start, then on schedule). The grace period is what makes it safe while backups run: a
running backup's chunks are young and no manifest references them yet. Reusing an *old*
unreferenced chunk is the one case the grace period does not cover (see app/chunkstore/gc.py),
so a due GC waits while backups run, but never longer than one more ``every``. With several
replicas one of them collects each period (``app.scheduler.maintenance``); the others wait a
period from its start.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.chunkstore import GcReport
from app.clock import Clock
from app.retention.onsite import OnsiteRepository
from app.retention.pruner import Pruner, PruneReport
from app.retention.repository import ONSITE_WRITING_KINDS, RetentionRepository
from app.scheduler.loop import LoopService
from app.scheduler.maintenance import claimed, last_run

log = logging.getLogger(__name__)

RECENT_OVERLAP = timedelta(minutes=10)


def catalog_not_migrated(exc: BaseException) -> bool:
    """A catalog whose tables do not exist yet (``serve`` started before ``migrate``)."""
    text = str(getattr(exc, "orig", exc))
    return isinstance(exc, DBAPIError) and ("no such table" in text or "does not exist" in text)


class _QuietUntilMigrated(LoopService):
    """One line, not a traceback per tick, while the catalog waits for ``vmrecovery migrate``."""

    async def run_once(self) -> None:
        try:
            await self.tick()
        except DBAPIError as exc:
            if not catalog_not_migrated(exc):
                raise
            log.warning("%s loop waits for the catalog to be migrated ('vmrecovery migrate')", self.name)

    @abstractmethod
    async def tick(self) -> None:
        """One iteration (what ``run_once`` is for other loops)."""


class RetentionLoop(_QuietUntilMigrated):
    name = "retention"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        onsite: OnsiteRepository,
        clock: Clock,
        interval_s: float = 60.0,
        full_every_s: float = 86400.0,
    ) -> None:
        super().__init__(interval_s)
        self.pruner = Pruner(sessionmaker, onsite)
        self.clock = clock
        self.full_every = timedelta(seconds=full_every_s)
        self.last_full_at: datetime | None = None
        self._previous_tick: datetime | None = None
        self.last_report = PruneReport()

    async def tick(self) -> None:
        started = self.clock.now()
        if (
            self._previous_tick is None
            or self.last_full_at is None
            or started - self.last_full_at >= self.full_every
        ):
            report = await self.pruner.prune_all()
            self.last_full_at = started
            kind = "full"
        else:
            vm_ids = await self.pruner.backed_up_since(self._previous_tick - RECENT_OVERLAP)
            report = await self.pruner.prune_vms(vm_ids)
            kind = "recent"
        self._previous_tick = started
        self.last_report = report
        if report.points_deleted or report.orphans_deleted or report.failed_vms:
            log.info(
                "retention (%s pass): %d VMs, %d restore points pruned, %d orphan manifests removed, "
                "%d held by restore records, %d VMs failed",
                kind,
                report.vms,
                report.points_deleted,
                report.orphans_deleted,
                report.held,
                len(report.failed_vms),
            )


class GcLoop(_QuietUntilMigrated):
    name = "gc"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        onsite: OnsiteRepository,
        clock: Clock,
        grace: timedelta = timedelta(hours=24),
        every: timedelta = timedelta(hours=24),
        interval_s: float = 300.0,
        writers: Collection[str] = ONSITE_WRITING_KINDS,
        name: str = "gc",
    ) -> None:
        super().__init__(interval_s)
        #: The loop's name in logs, and its claim's among the replicas (one per repository).
        self.name = name
        self.sessionmaker = sessionmaker
        self.onsite = onsite
        #: The job kinds that write into this repository: the collection waits while they run.
        self.writers = tuple(writers)
        self.clock = clock
        self.grace = grace
        self.every = every
        self.last_gc_at: datetime | None = None
        self._due_since: datetime | None = None
        self.last_report: GcReport | None = None
        self.deferred = 0

    async def tick(self) -> None:
        now = self.clock.now()
        if self.last_gc_at is not None and now - self.last_gc_at < self.every:
            return
        async with self.sessionmaker() as session:
            started = await last_run(session, self.name)
            running = await RetentionRepository(session).running_writers(self.writers)
        if started is not None and now - started < self.every:
            # Another replica collected this period (or this one, before a restart).
            self.last_gc_at = started
            self._due_since = None
            return
        if self._due_since is None:
            self._due_since = now
        if running and now - self._due_since < self.every:
            self.deferred += 1
            log.info("garbage collection waits: %d job(s) writing to the repository", running)
            return
        self._due_since = None
        async with claimed(self.sessionmaker, self.name, now, self.every) as claim:
            if not claim.won:
                self.last_gc_at = claim.other_started_at  # another replica claimed it a moment ago
                return
            report = await self.onsite.gc(self.grace)
        self.last_gc_at = now
        self.last_report = report
        log.info(
            "garbage collection: %d chunks (%d bytes) freed, %d unreferenced chunks younger than %s kept, "
            "%d orphan indexes removed; %d restore points reference %d chunks",
            report.chunks_deleted,
            report.bytes_freed,
            report.chunks_kept_young,
            self.grace,
            report.indexes_deleted,
            report.restore_points,
            report.chunks_referenced,
        )
        if report.sweeps_recovered:
            log.warning(
                "garbage collection put back %d objects an interrupted collection had moved aside",
                report.sweeps_recovered,
            )
