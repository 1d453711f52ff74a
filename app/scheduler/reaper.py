"""Ends what nobody will finish: lapsed leases and jobs whose window has passed.

- A running job whose lease lapsed (its proxy stopped reporting) goes back to the queue while
  it has attempts left (the first retry at once: a crashed proxy is not the job's fault, later
  ones with backoff), else fails; one an operator asked to cancel ends cancelled. For a backup,
  a clean-up job is queued to remove the snapshot the lost proxy may have left on the VM. A
  report of the proxy that lands first keeps the job where it is.
- A queued backup not started by the end of its backup window ends as ``missed``; so does a
  retry that the window's end overtook (retries keep to the window that protects production
  hours), with the failure that made it retry as its cause.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db.dialect import insert_ignoring_conflicts
from app.domain.jobs import JobKind, JobState, JobTrigger
from app.jobs.job_params import snapshot_name
from app.jobs.job_results import follow_job
from app.jobs.models import Job
from app.jobs.repository import JobRepository, queued_job_row
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)

LEASE_RETRY_BACKOFF = (timedelta(0), timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15))


#: Jobs read per statement; every pass goes on to the last batch.
BATCH = 5000


@dataclass
class ReapReport:
    requeued: int = 0
    failed: int = 0
    cancelled: int = 0
    missed: int = 0
    cleanups: int = 0


async def miss_overdue(session: AsyncSession, now: datetime) -> int:
    """End as ``missed`` the queued jobs whose window has passed; return how many.

    Part of every reaper pass (:func:`reap`): an overdue job still queued holds its VM's one
    active-backup place (``uq_jobs_active_backup``) and the new slot's job would be skipped as a
    duplicate.
    """
    jobs = JobRepository(session)

    async def miss(job: Job) -> bool:
        return await jobs.transition(
            job, JobState.MISSED, finished_at=now, error=_missed_because(job), error_kind="permanent"
        )

    overdue = select(Job).where(Job.state == JobState.QUEUED.value, Job.window_end < now)
    return await _each_in_batches(session, overdue, miss)


async def reap(session: AsyncSession, now: datetime) -> ReapReport:
    """Take back the jobs whose lease lapsed, end those whose cancel raced a re-queue, then end
    the overdue ones as missed.

    The reaper runs it every few seconds; the planner runs it before it queues a new slot's jobs,
    so that after downtime the VMs whose backups were running (their proxies gone with the
    service) get their catch-up jobs too: their old jobs first go back to the queue and then,
    their windows past, end as missed.
    """
    report = ReapReport()
    jobs = JobRepository(session)

    async def take_back(job: Job) -> bool:
        return await _lapsed(session, jobs, job, report, now)

    async def cancel(job: Job) -> bool:
        won = await jobs.transition(
            job, JobState.CANCELLED, finished_at=now, error="cancelled before its retry started"
        )
        if won:
            await follow_job(session, job)
        return won

    lapsed = select(Job).where(Job.state == JobState.RUNNING.value, Job.lease_expires_at < now)
    await _each_in_batches(session, lapsed, take_back)
    # A cancel that lands between a re-queue's read and its write (the reaper's, or a transient
    # failure's retry) leaves the job queued with the request set: no proxy takes such a job,
    # and one without a window would hold its VM's place for ever.
    stuck = select(Job).where(Job.state == JobState.QUEUED.value, Job.cancel_requested.is_(True))
    report.cancelled += await _each_in_batches(session, stuck, cancel)
    report.missed += await miss_overdue(session, now)
    return report


async def _each_in_batches(
    session: AsyncSession, jobs: Select[tuple[Job]], act: Callable[[Job], Awaitable[bool]]
) -> int:
    """``act`` on every job ``jobs`` selects, ``BATCH`` at a time and to the last batch (a job
    left behind holds its VM's place); stops early when a batch changed nothing (what is left,
    another replica changes). Replicas take rows in one order, so they never deadlock. Returns
    how many ``act`` changed."""
    changed = 0
    while True:
        batch = list((await session.execute(jobs.order_by(Job.id).limit(BATCH))).scalars())
        won = 0
        for job in batch:
            won += await act(job)
        changed += won
        if len(batch) < BATCH or won == 0:
            return changed


def _missed_because(job: Job) -> str:
    """Why a job ends missed, as its user needs to read it: a retry that found the window closed
    did start once, and what failed then is the cause to act on."""
    if job.attempt > 0:
        return (
            f"attempt {job.attempt} of {job.max_attempts} failed ({job.error or 'no reason given'}); "
            "no retry could start before the end of its backup window"
        )
    reason = job.waiting_reason or "no proxy took it in time"
    return f"not started by the end of its backup window ({reason})"


class ReaperLoop(LoopService):
    name = "reaper"

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, interval_s: float = 5
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.last_report = ReapReport()

    async def run_once(self) -> None:
        async with self.sessionmaker.begin() as session:
            report = await reap(session, self.clock.now())
        self.last_report = report
        if report.requeued or report.failed or report.cancelled or report.missed:
            log.info(
                "reaper: %d re-queued, %d failed, %d cancelled, %d missed, %d snapshot clean-ups",
                report.requeued,
                report.failed,
                report.cancelled,
                report.missed,
                report.cleanups,
            )


async def _lapsed(
    session: AsyncSession, jobs: JobRepository, job: Job, report: ReapReport, now: datetime
) -> bool:
    lost_proxy = job.proxy_id
    message = "the proxy stopped reporting and its lease expired"
    if job.cancel_requested:
        # Cancelled while it ran and its proxy never confirmed: re-queued, no proxy would take
        # it (cancel-requested jobs are not claimed) and it would hold its VM's place forever.
        won = await jobs.transition(
            job,
            JobState.CANCELLED,
            lapsed_by=now,
            finished_at=now,
            lease_expires_at=None,
            error=f"cancelled; {message} before it confirmed",
        )
        report.cancelled += int(won)
    elif job.attempt < job.max_attempts:
        delay = LEASE_RETRY_BACKOFF[min(job.attempt - 1, len(LEASE_RETRY_BACKOFF) - 1)]
        won = await jobs.transition(
            job,
            JobState.QUEUED,
            lapsed_by=now,
            not_before=now + delay,
            proxy_id=None,
            lease_expires_at=None,
            error=f"{message}; retrying",
            error_kind="transient",
            phase="waiting to retry",
        )
        report.requeued += int(won)
    else:
        won = await jobs.transition(
            job,
            JobState.FAILED,
            lapsed_by=now,
            finished_at=now,
            lease_expires_at=None,
            error=f"{message} and all {job.max_attempts} attempts are used",
            error_kind="transient",
        )
        report.failed += int(won)
    if not won:
        return False
    # Re-queued too: its restore goes back to "requested" (as after a transient failure the
    # agent reports), so no one reads it as running on a proxy that is gone.
    await follow_job(session, job)
    if job.state == JobState.QUEUED.value:
        await jobs.refresh_dispatch_hosts([job.vm_id])  # the VM may have moved meanwhile
    if job.kind == JobKind.BACKUP.value and lost_proxy is not None:
        report.cleanups += await insert_ignoring_conflicts(
            session,
            Job.__table__,
            [
                queued_job_row(
                    JobKind.SNAPSHOT_CLEANUP,
                    JobTrigger.CLEANUP,
                    job.tenant_id,
                    job.vm_id,
                    now,
                    5,
                    policy_id=job.policy_id,
                    params={
                        "snapshot_name": snapshot_name(lost_proxy, job.id, job.attempt),
                        "for_job_id": str(job.id),
                    },
                )
            ],
        )
        await jobs.refresh_dispatch_hosts([job.vm_id])
    return True
