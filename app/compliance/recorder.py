"""Loops that record compliance history: RPO breaches per VM, SLA clocks per restore.

Both are idempotent and safe on several replicas: every value they write is computed from
catalog timestamps (not from when they ran), open intervals are unique per VM (a partial
unique index; inserts skip conflicts) and closes are compare-and-set on ``ended_at IS NULL``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.compliance.clocks import clocks_of
from app.compliance.models import ProtectionSpan, RpoBreach
from app.compliance.repository import EPOCH_MARGIN_S, ComplianceRepository, TrackedVm
from app.domain.compliance import (
    DEFAULT_RTO_HOURS,
    SETTLED,
    BreachCause,
    BreachEvidence,
    BreachResolution,
    breach_cause,
    rpo_anchor,
    rpo_due,
)
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)


@dataclass
class RpoRecordReport:
    spans_opened: int = 0
    spans_closed: int = 0
    breaches_opened: int = 0
    breaches_closed: int = 0
    causes_changed: int = 0
    open_breaches: int = 0
    details: list[str] = field(default_factory=list)


def protection_start_estimate(vm: TrackedVm, had_span: bool, now: datetime) -> datetime:
    """When the VM's current protection began, as well as the catalog can tell.

    A VM the recorder has never seen protected: when it appeared, its protection last changed
    (a tag or folder in vCenter) or the policy last changed, whichever is latest: one of them
    made it protected. A VM that was protected before and
    is again (or changed policy): now, as the recorder observes the change.
    """
    if had_span:
        return now
    return min(now, max(vm.protectable_since, vm.policy_updated_at))


def breach_start(
    due: datetime, last_breach_end: datetime | None, rpo_changed_at: datetime | None
) -> datetime:
    """When a new breach begins: at its due time, but never inside the VM's previous breach, nor
    before its policy's RPO last changed. A VM lowered from 24 h to 4 h with a 10-hour-old point
    met the RPO it had until the change; its breach starts then, not six hours before anyone
    asked for four. (Were the recorder down across the change while the VM was overdue under
    the old RPO too, that stretch is lost; the recorder runs every minute.)"""
    start = due
    for floor in (last_breach_end, rpo_changed_at):
        if floor is not None and floor > start:
            start = floor
    return start


class RpoRecorder(LoopService):
    """Keeps ``rpo_breaches`` and ``rpo_protection_spans`` in step with the catalog."""

    name = "rpo-recorder"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        proxy_stale_after_s: float = 90.0,
        interval_s: float = 60.0,
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.stale_after = timedelta(seconds=proxy_stale_after_s)
        self.last_report = RpoRecordReport()

    async def run_once(self) -> None:
        now = self.clock.now()
        async with self.sessionmaker.begin() as session:
            report = await self.record(ComplianceRepository(session), now)
        self.last_report = report
        if report.breaches_opened or report.breaches_closed or report.causes_changed:
            log.info(
                "rpo: %d breaches opened, %d closed, %d causes changed; %d open",
                report.breaches_opened,
                report.breaches_closed,
                report.causes_changed,
                report.open_breaches,
            )

    async def record(self, repo: ComplianceRepository, now: datetime) -> RpoRecordReport:
        report = RpoRecordReport()
        # VMs that left protection: their span and any open breach end now.
        for span_id, vm_id in await repo.open_spans_not_protected():
            if await repo.close_span(span_id, now):
                report.spans_closed += 1
            breach = await repo.open_breach_of(vm_id)
            if breach is not None and await repo.close_breach(
                breach.id, max(now, breach.started_at), BreachResolution.UNPROTECTED.value, now
            ):
                report.breaches_closed += 1

        vms = await repo.protected_vms()
        # A VM protected by another policy than its open span's: a new span (and breach).
        spans: dict[uuid.UUID, tuple[uuid.UUID | None, datetime | None]] = {}
        breaches: dict[uuid.UUID, RpoBreach | None] = {}
        for vm in vms:
            span = (vm.span_id, vm.span_started_at)
            breach = vm.breach
            if vm.span_id is not None and vm.span_policy_id != vm.policy_id:
                if await repo.close_span(vm.span_id, now):
                    report.spans_closed += 1
                if breach is not None and await repo.close_breach(
                    breach.id, max(now, breach.started_at), BreachResolution.POLICY_CHANGED.value, now
                ):
                    report.breaches_closed += 1
                span, breach = (None, None), None
            spans[vm.vm_id] = span
            breaches[vm.vm_id] = breach
        await self._open_spans(repo, vms, spans, now, report)

        overdue: dict[uuid.UUID, datetime] = {}
        back_in_compliance: list[RpoBreach] = []
        for vm in vms:
            started = spans[vm.vm_id][1]
            if started is None:
                continue  # lost a race for the span to another recorder's still-open transaction
            due = rpo_due(rpo_anchor(vm.latest_point_at, started), vm.rpo_hours)
            breach = breaches[vm.vm_id]
            if now > due:
                overdue[vm.vm_id] = due
                if breach is not None and _ended_by_a_later_point(breach, vm.latest_point_at):
                    # Overdue again, but a point landed after this breach began (the recorder
                    # was down, or a backup took longer than the new RPO): the breach ends at
                    # that point and a new one opens from its own due time, leaving the
                    # compliant stretch between them out.
                    back_in_compliance.append(breach)
                    breaches[vm.vm_id] = None
            elif breach is not None:
                back_in_compliance.append(breach)
                breaches[vm.vm_id] = None
        await self._close(repo, back_in_compliance, now, report)
        await self._open_or_update_breaches(repo, vms, overdue, breaches, now, report)
        report.open_breaches = len(overdue)
        return report

    async def _open_spans(
        self,
        repo: ComplianceRepository,
        vms: list[TrackedVm],
        spans: dict[uuid.UUID, tuple[uuid.UUID | None, datetime | None]],
        now: datetime,
        report: RpoRecordReport,
    ) -> None:
        missing = [vm for vm in vms if spans[vm.vm_id][0] is None]
        if not missing:
            return
        previous = await repo.vms_with_spans([vm.vm_id for vm in missing])
        rows = []
        for vm in missing:
            start = protection_start_estimate(vm, vm.vm_id in previous, now)
            if vm.vm_id in previous:
                start = max(start, previous[vm.vm_id])
            rows.append(
                {
                    "id": uuid.uuid4(),
                    "tenant_id": vm.tenant_id,
                    "vm_id": vm.vm_id,
                    "policy_id": vm.policy_id,
                    "started_at": start,
                    "ended_at": None,
                }
            )
        await repo.open_spans_and_breaches(rows, ProtectionSpan.__table__)
        opened = await repo.open_spans([vm.vm_id for vm in missing])
        created = {row["id"] for row in rows}
        for vm in missing:
            span_id, started = opened.get(vm.vm_id, (None, None))
            spans[vm.vm_id] = (span_id, started)
            if span_id in created:
                report.spans_opened += 1

    async def _close(
        self, repo: ComplianceRepository, found: list[RpoBreach], now: datetime, report: RpoRecordReport
    ) -> None:
        """Back in compliance: a breach ends when the restore point that ended it was taken
        (never before it began), or now when no new point did it (the RPO was relaxed)."""
        if not found:
            return
        ending = await repo.points_ending([b.id for b in found])
        closes = []
        for breach in found:
            first = ending.get(breach.id)
            if first is not None:
                closes.append((breach.id, max(first, breach.started_at), BreachResolution.BACKED_UP.value))
            else:
                closes.append((breach.id, max(now, breach.started_at), BreachResolution.RPO_CHANGED.value))
        await repo.close_breaches(closes, now)
        report.breaches_closed += len(closes)

    async def _open_or_update_breaches(
        self,
        repo: ComplianceRepository,
        vms: list[TrackedVm],
        overdue: dict[uuid.UUID, datetime],
        breaches: dict[uuid.UUID, RpoBreach | None],
        now: datetime,
        report: RpoRecordReport,
    ) -> None:
        if not overdue:
            return
        ids = list(overdue)
        jobs = await repo.latest_backup_jobs(ids)
        everywhere, served = await repo.hosts_with_online_proxy(now - self.stale_after)
        critical = await repo.datastores_by_status(ids, ["critical"])
        by_id = {vm.vm_id: vm for vm in vms}
        new_ids = [vm_id for vm_id in ids if breaches[vm_id] is None]
        last_ends = await repo.last_breach_ends(new_ids) if new_ids else {}
        rows = []
        changes: list[tuple[uuid.UUID, str, list[str], str]] = []
        for vm_id, due in overdue.items():
            vm = by_id[vm_id]
            job = jobs.get(vm_id)
            cause, detail = breach_cause(
                BreachEvidence(
                    has_restore_point=vm.latest_point_at is not None,
                    job_state=job.state if job else None,
                    job_waiting_reason=job.waiting_reason if job else None,
                    job_error=job.error if job else None,
                    proxy_online=everywhere or (vm.host_id is not None and vm.host_id in served),
                    critical_datastores=tuple(d.name for d in critical.get(vm_id, [])),
                )
            )
            breach = breaches[vm_id]
            if breach is None:
                start = breach_start(due, last_ends.get(vm_id), vm.rpo_changed_at)
                rows.append(self._breach_row(vm, start, cause, detail, now))
            elif breach.cause != cause.value or breach.detail != detail:
                causes = list(breach.causes or [])
                if cause.value not in causes:
                    causes.append(cause.value)
                changes.append((breach.id, cause.value, causes, detail[:1000]))
                if breach.cause != cause.value:
                    report.causes_changed += 1
        await repo.set_breach_causes(changes, now)
        if rows:
            await repo.open_spans_and_breaches(rows, RpoBreach.__table__)
            report.breaches_opened += len(rows)

    @staticmethod
    def _breach_row(
        vm: TrackedVm, start: datetime, cause: BreachCause, detail: str, now: datetime
    ) -> dict[str, object]:
        return {
            "id": uuid.uuid4(),
            "tenant_id": vm.tenant_id,
            "vm_id": vm.vm_id,
            "policy_id": vm.policy_id,
            "rpo_hours": vm.rpo_hours,
            "started_at": start,
            "ended_at": None,
            "cause": cause.value,
            "causes": [cause.value],
            "detail": detail[:1000],
            "resolution": None,
            "updated_at": now,
        }


class RestoreSlaRecorder(LoopService):
    """Records the SLA clocks of every restore whose clocks are not settled yet."""

    name = "restore-sla-recorder"

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], clock: Clock, interval_s: float = 30.0
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.last_changed = 0

    async def run_once(self) -> None:
        now = self.clock.now()
        async with self.sessionmaker.begin() as session:
            self.last_changed = await self.record(ComplianceRepository(session), now)
        if self.last_changed:
            log.info("restore SLA: %d restores' clocks recorded", self.last_changed)

    async def record(self, repo: ComplianceRepository, now: datetime) -> int:
        rows = await repo.restores_with_rto(None, unsettled_only=True)
        recorded = await repo.restore_slas([r.id for r, *_ in rows])
        changed = 0
        for restore, _, rto_hours, _ in rows:
            rto = rto_hours if rto_hours is not None else DEFAULT_RTO_HOURS
            clocks = clocks_of(restore, rto, now)
            values: dict[str, object] = {
                "restore_id": restore.id,
                "tenant_id": restore.tenant_id,
                "source_location": restore.source_location,
                "rto_hours": rto,
                "initiation_deadline_at": clocks.initiation.deadline_at,
                "initiation_status": clocks.initiation.status.value,
                "initiation_at_risk_at": clocks.initiation.at_risk_at,
                "initiation_breached_at": clocks.initiation.breached_at,
                "completion_deadline_at": clocks.completion.deadline_at,
                "completion_status": clocks.completion.status.value,
                "completion_at_risk_at": clocks.completion.at_risk_at,
                "completion_breached_at": clocks.completion.breached_at,
                "settled": clocks.initiation.status in SETTLED and clocks.completion.status in SETTLED,
            }
            current = recorded.get(restore.id)
            if current is not None and all(getattr(current, k) == v for k, v in values.items()):
                continue
            await repo.save_restore_sla({**values, "updated_at": now}, current is not None)
            changed += 1
        return changed


def _ended_by_a_later_point(breach: RpoBreach, latest_point_at: datetime | None) -> bool:
    """Whether the VM has a point newer than the one the breach is anchored on."""
    anchor = breach.started_at - timedelta(hours=breach.rpo_hours)
    # The same margin as points_ending, which then finds that point to end the breach at.
    return latest_point_at is not None and latest_point_at > anchor + timedelta(seconds=EPOCH_MARGIN_S)
