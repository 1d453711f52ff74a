"""Offsite retention and copies that need another try.

:class:`OffsiteLoop` runs every ``interval_s``: it prunes the offsite copies beyond each policy's
offsite retention (catalog first, then the offsite manifests, as onsite pruning does), and queues
copies again for points of offsite-copying policies whose copy failed a while ago, or never started
(the policy gained offsite copies, a copy job was lost). Once a day it also removes the offsite
manifests the catalog no longer wants (``reconcile``): those whose removal was committed but whose
deletion failed, and those of copies that ended after their point's row was pruned. GC of the
offsite repository is a ``GcLoop`` of its own.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.domain.jobs import JobKind, JobState
from app.jobs.job_results import queue_copy
from app.jobs.models import Job
from app.jobs.repository import JobRepository
from app.policies.models import Policy
from app.restore_points.models import RestorePoint
from app.retention.loop import _QuietUntilMigrated
from app.retention.onsite import OffsiteRepository
from app.retention.orphans import remove_orphans
from app.retention.repository import RetentionRepository
from app.retention.service import RetentionService
from app.scheduler.maintenance import claimed

log = logging.getLogger(__name__)

#: A failed copy is tried again after this (its job already retried with backoff).
RETRY_AFTER = timedelta(hours=1)
#: How often the offsite repository's manifests are listed against the catalog (a listing of an
#: object store costs a request per thousand manifests).
RECONCILE_EVERY = timedelta(hours=24)
#: The reconcile's claim among the replicas (app.scheduler.maintenance).
RECONCILE_RUN = "offsite-reconcile"
#: Points older than this that were never copied are left alone (a policy that gained offsite
#: copies gets new points copied, not years of history at once).
BACKFILL = timedelta(days=2)


class OffsiteLoop(_QuietUntilMigrated):
    name = "offsite"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        offsite: OffsiteRepository,
        clock: Clock,
        interval_s: float = 600.0,
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.offsite = offsite
        self.clock = clock
        self.last_pruned = 0
        self.last_requeued = 0
        self.last_orphans = 0
        self.reconciled_at: datetime | None = None

    async def tick(self) -> None:
        if not self.offsite.configured:
            return
        self.last_requeued = await self.requeue_copies()
        self.last_pruned = await self.prune()
        now = self.clock.now()
        if self.reconciled_at is None or now - self.reconciled_at >= RECONCILE_EVERY:
            # One replica lists the offsite repository per day; the others wait a day from then.
            async with claimed(self.sessionmaker, RECONCILE_RUN, now, RECONCILE_EVERY) as claim:
                if claim.won:
                    self.last_orphans = await self.reconcile()
            self.reconciled_at = now if claim.won else claim.other_started_at
        if self.last_pruned or self.last_requeued:
            log.info(
                "offsite: %d copies pruned, %d copies queued again", self.last_pruned, self.last_requeued
            )

    async def reconcile(self) -> int:
        """Remove offsite manifests the catalog no longer wants; return how many went.

        A point offsite retention marked ``pruned`` keeps its row for its onsite copy: its offsite
        manifest goes, whatever retention says now (the removal was committed). A manifest without
        a row (its removal deleted the row, or its copy ended after onsite retention deleted it)
        goes when offsite retention would prune it (``app.retention.orphans``).
        """
        await self.offsite.open()
        manifest_ids = await self.offsite.list_restore_points()
        async with self.sessionmaker() as session:
            repo = RetentionRepository(session)
            pruned = {str(pid) for pid in await repo.offsite_pruned_ids()}
            known = {str(pid) for pid in await repo.all_point_ids()}
        removed = await self.offsite.delete_restore_points([mid for mid in manifest_ids if mid in pruned])
        if removed:
            log.info("removed %d offsite manifest(s) whose removal was committed earlier", len(removed))
        orphan_ids = [mid for mid in manifest_ids if mid not in known]
        return len(removed) + await remove_orphans(self.sessionmaker, self.offsite, orphan_ids, offsite=True)

    async def prune(self) -> int:
        async with self.sessionmaker() as session:
            vm_ids = list(
                (
                    await session.execute(
                        select(RestorePoint.vm_id).where(RestorePoint.copy_status == "offsite").distinct()
                    )
                ).scalars()
            )
        pruned = 0
        for vm_id in vm_ids:
            try:
                pruned += await self.prune_vm(vm_id)
            except Exception:
                log.exception("offsite pruning of VM %s failed; retried on the next pass", vm_id)
        return pruned

    async def prune_vm(self, vm_id: uuid.UUID) -> int:
        await self.offsite.open()  # an unreachable offsite repository stops us before any row changes
        async with self.sessionmaker.begin() as session:
            service = RetentionService(session)
            plan = await service.plan_vm_offsite(vm_id)
            removed = await service.remove_offsite(plan.prune)
        if removed:
            await self.offsite.delete_restore_points([str(pid) for pid in removed])
        return len(removed)

    async def requeue_copies(self) -> int:
        """Queue copies again for recent points of offsite-copying policies that have none: failed
        over an hour ago, or never started. Returns how many were queued."""
        now = self.clock.now()
        async with self.sessionmaker.begin() as session:
            candidates = list(
                (
                    await session.execute(
                        select(RestorePoint)
                        .join(Policy, Policy.id == RestorePoint.policy_id)
                        .where(
                            Policy.offsite_copy.is_(True),
                            RestorePoint.onsite_removed_at.is_(None),
                            RestorePoint.copy_status.in_(["none", "copying", "copy_failed"]),
                            RestorePoint.created_at >= now - BACKFILL,
                        )
                        .limit(1000)
                    )
                ).scalars()
            )
            if not candidates:
                return 0
            vm_ids = {p.vm_id for p in candidates}
            copies = await session.execute(
                select(Job.params, Job.state, Job.finished_at).where(
                    Job.kind == JobKind.OFFSITE_COPY.value, Job.vm_id.in_(vm_ids)
                )
            )
            active: set[str] = set()
            last_end: dict[str, datetime] = {}
            for params, state, finished_at in copies.tuples():
                point_id = str(params.get("restore_point_id"))
                if state in (JobState.QUEUED.value, JobState.RUNNING.value):
                    active.add(point_id)
                elif finished_at is not None and (
                    point_id not in last_end or finished_at > last_end[point_id]
                ):
                    last_end[point_id] = finished_at
            jobs = JobRepository(session)
            queued = 0
            for point in candidates:
                key = str(point.id)
                if key in active:
                    continue
                ended = last_end.get(key)
                if ended is not None and now - ended < RETRY_AFTER:
                    continue  # its last copy ended recently: give the cause time to clear
                await queue_copy(jobs, point, now)
                queued += 1
            return queued
