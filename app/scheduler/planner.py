"""Creates the scheduled backup jobs: one per protected VM and schedule slot.

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

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.db.dialect import insert_ignoring_conflicts
from app.domain import schedule as sched
from app.domain.jobs import JobKind, JobTrigger
from app.inventory.models import VirtualMachine
from app.jobs.models import Job
from app.jobs.repository import queued_job_row
from app.policies.models import Policy
from app.policies.service import latest_slot
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
            slot = latest_slot(policy, now)
            if slot is None or (policy.last_planned_slot is not None and slot <= policy.last_planned_slot):
                continue
            async with self.sessionmaker.begin() as session:
                created = await self._plan(session, policy, slot, now)
            if created is not None:
                report.policies_planned += 1
                report.jobs_created += created
        self.last_report = report
        if report.policies_planned:
            log.info("planned %d policies: %d backup jobs", report.policies_planned, report.jobs_created)

    async def _plan(self, session: AsyncSession, policy: Policy, slot: datetime, now: datetime) -> int | None:
        won = await session.execute(
            update(Policy)
            .where(
                Policy.id == policy.id,
                or_(Policy.last_planned_slot.is_(None), Policy.last_planned_slot < slot),
            )
            .values(last_planned_slot=slot)
            .execution_options(synchronize_session=False)
        )
        if getattr(won, "rowcount", 0) != 1:
            return None  # another replica planned this slot
        tz = sched.load_timezone(policy.timezone)
        window = policy.backup_window
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
                select(VirtualMachine.id, VirtualMachine.tenant_id).where(
                    VirtualMachine.protection_policy_id == policy.id, VirtualMachine.gone_at.is_(None)
                )
            )
        ).tuples()
        rows = [
            queued_job_row(
                JobKind.BACKUP,
                trigger,
                tenant_id,
                vm_id,
                now,
                policy.retry_count + 1,
                policy_id=policy.id,
                params={"quiesce": policy.application_aware},
                scheduled_for=slot,
                window_end=window_end,
            )
            for vm_id, tenant_id in vm_ids
        ]
        return await insert_ignoring_conflicts(session, Job.__table__, rows)
