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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db.dialect import insert_ignoring_conflicts
from app.domain import schedule as sched
from app.domain.jobs import GUEST_JOB_KINDS, JobKind, JobTrigger
from app.inventory.models import VirtualMachine
from app.jobs.models import Job
from app.jobs.repository import queued_job_row
from app.policies.models import Policy
from app.policies.service import application_protection, latest_app_slot, latest_slot
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)


@dataclass
class PlanReport:
    policies_planned: int = 0
    jobs_created: int = 0


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
        now = self.clock.now()
        report = PlanReport()
        async with self.sessionmaker() as session:
            policies = list((await session.execute(select(Policy).where(Policy.enabled.is_(True)))).scalars())
        for policy in policies:
            for plan in (_image_plan(policy, now), _application_plan(policy, now)):
                if plan is None:
                    continue
                async with self.sessionmaker.begin() as session:
                    created = await self._plan(session, policy, plan, now)
                if created is not None:
                    report.policies_planned += 1
                    report.jobs_created += created
        self.last_report = report
        if report.policies_planned:
            log.info("planned %d policies: %d backup jobs", report.policies_planned, report.jobs_created)

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
        vm_ids = (
            await session.execute(
                select(VirtualMachine.id, VirtualMachine.tenant_id, VirtualMachine.host_id).where(
                    VirtualMachine.protection_policy_id == policy.id, VirtualMachine.gone_at.is_(None)
                )
            )
        ).tuples()
        rows = [
            queued_job_row(
                plan.kind,
                trigger,
                tenant_id,
                vm_id,
                now,
                policy.retry_count + 1,
                policy_id=policy.id,
                params=plan.params,
                scheduled_for=slot,
                window_end=window_end,
                dispatch_host_id=host_id if plan.kind not in GUEST_JOB_KINDS else None,
            )
            for vm_id, tenant_id, host_id in vm_ids
        ]
        await insert_ignoring_conflicts(session, Job.__table__, rows, count=False)
        # Exact: this replica alone plans this slot (the compare-and-set above), so every job of the
        # slot is one it just inserted; rows skipped for a VM's active backup are not counted.
        # Counted through the unique (vm_id, kind, scheduled_for) index, one probe per VM.
        created = await session.execute(
            select(func.count()).where(
                Job.vm_id.in_(
                    select(VirtualMachine.id).where(
                        VirtualMachine.protection_policy_id == policy.id, VirtualMachine.gone_at.is_(None)
                    )
                ),
                Job.kind == plan.kind.value,
                Job.scheduled_for == slot,
            )
        )
        return int(created.scalar_one())


@dataclass(frozen=True)
class _SlotPlan:
    """A slot of one of a policy's schedules that is due and not planned yet."""

    kind: JobKind
    slot: datetime
    slot_column: Any  # the policy column that records the last planned slot of this schedule
    window: dict[str, Any]
    params: dict[str, Any]


def _image_plan(policy: Policy, now: datetime) -> _SlotPlan | None:
    slot = latest_slot(policy, now)
    if slot is None or (policy.last_planned_slot is not None and slot <= policy.last_planned_slot):
        return None
    params = {"quiesce": policy.application_aware}
    return _SlotPlan(JobKind.BACKUP, slot, Policy.last_planned_slot, policy.backup_window, params)


def _application_plan(policy: Policy, now: datetime) -> _SlotPlan | None:
    apps = application_protection(policy)
    slot = latest_app_slot(policy, now)
    if apps is None or slot is None:
        return None
    if policy.last_planned_app_slot is not None and slot <= policy.last_planned_app_slot:
        return None
    # What to back up is read from the policy when the agent claims the job (it may change).
    return _SlotPlan(JobKind.APP_BACKUP, slot, Policy.last_planned_app_slot, apps.window.model_dump(), {})
