"""Creates the scheduled backup jobs: one per protected VM and schedule slot.

Image backups follow the policy's schedule; application backups (guest agent) follow their own
schedule in the policy's ``applications`` and are planned the same way, on their own slot column.

Each tick looks at every enabled policy's latest slot (its schedule's last run time not
later than now). A slot not planned yet is claimed with compare-and-set on the policy, so one
replica plans it, and the jobs are inserted with ``ON CONFLICT DO NOTHING`` against the unique
(VM, slot) index, so even a lost race cannot duplicate them. After downtime only the latest
missed slot is planned: one catch-up job per VM, with a fresh window, not a flood.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db.dialect import insert_from_select_ignoring_conflicts, new_uuid, refresh_state_statistics
from app.domain import schedule as sched
from app.domain.jobs import GUEST_JOB_KINDS, JobKind, JobTrigger
from app.inventory.models import VirtualMachine
from app.jobs.models import Job
from app.jobs.repository import queued_job_row
from app.policies.models import Policy
from app.policies.schemas import BackupWindow
from app.policies.service import application_protection, latest_app_slot, latest_slot
from app.scheduler.loop import LoopService
from app.scheduler.reaper import reap

log = logging.getLogger(__name__)


#: A tick that queues at least this many jobs refreshes the jobs table's state statistics.
STATISTICS_REFRESH_MIN_JOBS = 1000


@dataclass
class PlanReport:
    policies_planned: int = 0
    policies_failed: int = 0  # raised while planned (logged); the others were planned all the same
    jobs_created: int = 0
    #: Time until the jobs were queued (committed), and the statistics refresh after it.
    plan_s: float = 0.0
    statistics_s: float = 0.0


class PlannerLoop(LoopService):
    name = "planner"

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, interval_s: float = 30
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.last_report = PlanReport()

    async def run_once(self) -> None:
        started = time.perf_counter()
        report = await self._plan_all()
        report.plan_s = time.perf_counter() - started
        if report.jobs_created >= STATISTICS_REFRESH_MIN_JOBS:
            # After the commit: the jobs are claimable already; the refresh makes the claims'
            # state lookups plan against the real queue (see refresh_state_statistics).
            started = time.perf_counter()
            async with self.sessionmaker.begin() as session:
                await refresh_state_statistics(session, Job.__tablename__)
            report.statistics_s = time.perf_counter() - started
        self.last_report = report
        if report.policies_planned:
            log.info(
                "planned %d policies: %d backup jobs in %.2f s",
                report.policies_planned,
                report.jobs_created,
                report.plan_s,
            )

    async def _plan_all(self) -> PlanReport:
        now = self.clock.now()
        report = PlanReport()
        async with self.sessionmaker() as session:
            policies = list((await session.execute(select(Policy).where(Policy.enabled.is_(True)))).scalars())
        due: list[tuple[Policy, _SlotPlan]] = []
        for policy in policies:
            try:
                plans = (_image_plan(policy, now), _application_plan(policy, now))
            except Exception:
                _cannot_plan(policy)
                report.policies_failed += 1
                continue
            due += [(policy, plan) for plan in plans if plan is not None]
        if due:
            # After downtime the previous slot's jobs may still be queued past their window, or
            # running on proxies long gone (the reaper has not run yet): they would hold their
            # VMs' places and the new slot's jobs, the catch-up ones included, would be skipped
            # as duplicates. One reaper pass per tick that has slots to plan, before any of them.
            try:
                async with self.sessionmaker.begin() as session:
                    reaped = await reap(session, now)
            except Exception:
                # The reaper loop runs the same pass; planning goes on (a leftover job only
                # means that VM's catch-up waits for the next tick).
                log.exception("the planner's reaper pass failed; planning goes on")
            else:
                if reaped.requeued or reaped.failed or reaped.cancelled or reaped.missed:
                    log.info(
                        "before planning: %d re-queued, %d failed, %d cancelled, %d missed",
                        reaped.requeued,
                        reaped.failed,
                        reaped.cancelled,
                        reaped.missed,
                    )
        for policy, plan in due:
            try:
                async with self.sessionmaker.begin() as session:
                    created = await self._plan(session, policy, plan, now)
            except Exception:
                _cannot_plan(policy)
                report.policies_failed += 1
                continue
            if created is not None:
                report.policies_planned += 1
                report.jobs_created += created
        return report

    async def _plan(
        self, session: AsyncSession, policy: Policy, plan: _SlotPlan, now: datetime
    ) -> int | None:
        slot = plan.slot
        won = await session.execute(
            update(Policy)
            .where(Policy.id == policy.id, or_(plan.slot_column.is_(None), plan.slot_column < slot))
            .values({plan.slot_column: slot})
            .execution_options(synchronize_session=False)
        )
        if getattr(won, "rowcount", 0) != 1:
            return None  # another replica planned this slot
        tz = sched.load_timezone(policy.timezone)
        window = plan.window
        window_end = sched.window_end_for(
            slot, sched.parse_hhmm(window["start"]), int(window["duration_minutes"]), tz
        )
        trigger = JobTrigger.SCHEDULED
        if window_end <= now:
            # The service was down through this slot's window: back up once now instead.
            trigger = JobTrigger.CATCH_UP
            window_end = now + timedelta(minutes=int(window["duration_minutes"]))
        return await insert_jobs_of_policy(
            session,
            queued_job_row(
                plan.kind,
                trigger,
                UNSET,
                UNSET,
                now,
                policy.retry_count + 1,
                policy_id=policy.id,
                params=plan.params,
                scheduled_for=slot,
                window_end=window_end,
                dispatch_host_id=UNSET if plan.kind not in GUEST_JOB_KINDS else None,
            ),
            policy,
        )


#: Placeholder for the columns :func:`insert_jobs_of_policy` takes from each VM's row.
UNSET = uuid.UUID(int=0)


async def insert_jobs_of_policy(session: AsyncSession, template: dict[str, Any], policy: Policy) -> int:
    """One job per VM the policy protects, from ``template``, in one ``INSERT ... SELECT``.

    The rows never leave the database: one statement per policy instead of an executemany of
    thousands of rows sent from here (at 10,000 VMs that took a tick 2.0-2.4 s, this 0.75 s, most
    of it the jobs table's index and foreign-key upkeep; see docs/benchmarks.md). ``ON CONFLICT DO
    NOTHING`` skips a VM that already has this slot's job or an active backup; the row count is
    exact for a single statement, so it is what the tick reports.
    """
    table = Job.__table__
    from_vm = {
        "id": new_uuid(session),
        "tenant_id": VirtualMachine.tenant_id,
        "vm_id": VirtualMachine.id,
        "dispatch_host_id": VirtualMachine.host_id,
    }
    columns = list(template)
    values = [
        from_vm[name] if _from_vm(template, name) else literal(template[name], table.c[name].type)
        for name in columns
    ]
    rows = select(*values).where(
        VirtualMachine.protection_policy_id == policy.id, VirtualMachine.gone_at.is_(None)
    )
    result = await session.execute(insert_from_select_ignoring_conflicts(session, table, columns, rows))
    return int(getattr(result, "rowcount", 0) or 0)


def _from_vm(template: dict[str, Any], name: str) -> bool:
    return name == "id" or template[name] is UNSET


@dataclass(frozen=True)
class _SlotPlan:
    """A slot of one of a policy's schedules that is due and not planned yet."""

    kind: JobKind
    slot: datetime
    slot_column: Any  # the policy column that records the last planned slot of this schedule
    window: dict[str, Any]
    params: dict[str, Any]


def _cannot_plan(policy: Policy) -> None:
    """One policy the planner cannot plan (a row it cannot read, a statement that fails) must
    not stop the other policies, of every tenant: it is logged, and tried again next tick."""
    log.exception("cannot plan policy '%s' (%s); the other policies go on", policy.name, policy.id)


def _image_plan(policy: Policy, now: datetime) -> _SlotPlan | None:
    slot = latest_slot(policy, now)
    if slot is None or (policy.last_planned_slot is not None and slot <= policy.last_planned_slot):
        return None
    params = {"quiesce": policy.application_aware}
    # Read as the API shows it (defaults filled in), whatever an earlier version stored.
    window = BackupWindow.model_validate(policy.backup_window).model_dump()
    return _SlotPlan(JobKind.BACKUP, slot, Policy.last_planned_slot, window, params)


def _application_plan(policy: Policy, now: datetime) -> _SlotPlan | None:
    apps = application_protection(policy)
    slot = latest_app_slot(policy, now)
    if apps is None or slot is None:
        return None
    if policy.last_planned_app_slot is not None and slot <= policy.last_planned_app_slot:
        return None
    # What to back up is read from the policy when the agent claims the job (it may change).
    return _SlotPlan(JobKind.APP_BACKUP, slot, Policy.last_planned_app_slot, apps.window.model_dump(), {})
