"""RPO and restore SLA reports, computed at read time from the catalog and recorded history."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.compliance.clocks import clocks_of
from app.compliance.models import RpoBreach
from app.compliance.repository import ComplianceRepository, GroupPeriodRow, ReportFilter, VmPeriodRow
from app.compliance.schemas import (
    BreachRead,
    ClockCounts,
    ClockRead,
    ComplianceSummary,
    DatastoreSpaceRead,
    OffsiteRpo,
    OpenBreachRef,
    Period,
    RestoreSlaRead,
    RestoreSlaSummary,
    RpoReport,
    RpoRow,
)
from app.domain.compliance import (
    DEFAULT_RTO_HOURS,
    ClockStatus,
    RpoStatus,
    SlaClock,
    compliant_percent,
    initiation_window,
    rpo_anchor,
    rpo_due,
    rpo_status,
)
from app.errors import InvalidInput, NotFound
from app.pagination import PageRequest

DEFAULT_PERIOD = timedelta(days=30)


class GroupBy(StrEnum):
    VM = "vm"
    POLICY = "policy"
    TENANT = "tenant"


@dataclass(frozen=True)
class PeriodBounds:
    """The asked period and its effective end (no later than now)."""

    lo: datetime
    hi: datetime
    asked_to: datetime


def period_bounds(now: datetime, from_: datetime | None, to: datetime | None) -> PeriodBounds:
    asked_to = to or now
    lo = from_ or asked_to - DEFAULT_PERIOD
    for name, value in (("from", from_), ("to", to)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(
                "Give times with a timezone (e.g. 2026-01-01T00:00:00Z).", field=["query", name]
            )
    if lo >= asked_to:
        raise InvalidInput("The period's 'from' must be before its 'to'.", field=["query", "from"])
    return PeriodBounds(lo, min(asked_to, now), asked_to)


def breach_read(b: RpoBreach, now: datetime, vm_name: str | None = None) -> BreachRead:
    end = b.ended_at or now
    return BreachRead(
        id=b.id,
        tenant_id=b.tenant_id,
        vm_id=b.vm_id,
        vm_name=vm_name,
        policy_id=b.policy_id,
        rpo_hours=b.rpo_hours,
        started_at=b.started_at,
        ended_at=b.ended_at,
        duration_s=max(0.0, (end - b.started_at).total_seconds()),
        cause=b.cause,
        causes=list(b.causes or [b.cause]),
        detail=b.detail,
        resolution=b.resolution,
    )


def _vm_status(row: VmPeriodRow, now: datetime) -> tuple[RpoStatus, datetime | None, datetime | None]:
    """(status now, protected since, due) of a VM row."""
    if not row.protected or row.rpo_hours is None:
        return RpoStatus.UNPROTECTED, None, None
    since = row.span_started_at
    if since is None:  # the recorder has not seen it yet: the same estimate it will make
        since = min(now, max(row.protectable_since, row.policy_updated_at or row.protectable_since))
    anchor = rpo_anchor(row.latest_point_at, since)
    return rpo_status(anchor, row.rpo_hours, now), since, rpo_due(anchor, row.rpo_hours)


def _rpo_row(
    key: dict[str, object],
    by_status: Mapping[RpoStatus, int],
    protected_s: float,
    breached_s: float,
    breaches_in_period: int,
    open_breaches: int,
    below_space_requirement: int,
) -> RpoRow:
    """The figures of some VMs (one, a group, all) as a report row; ``key`` names what they are."""
    return RpoRow.model_validate(
        {
            "tenant_id": None,
            "tenant_name": None,
            "policy_id": None,
            "policy_name": None,
            "rpo_hours": None,
            **key,
            "vm_count": sum(by_status.values()),
            **{status.value: by_status.get(status, 0) for status in RpoStatus},
            "protected_s": protected_s,
            "breached_s": breached_s,
            "compliant_percent": compliant_percent(protected_s, breached_s),
            "breaches_in_period": breaches_in_period,
            "open_breaches": open_breaches,
            "below_space_requirement": below_space_requirement,
        }
    )


def _aggregate(rows: list[tuple[VmPeriodRow, RpoStatus]], **key: object) -> RpoRow:
    return _rpo_row(
        key,
        Counter(status for _, status in rows),
        sum(r.protected_s for r, _ in rows),
        sum(r.breached_s for r, _ in rows),
        sum(r.breaches_in_period for r, _ in rows),
        sum(1 for r, _ in rows if r.open_breach_started_at is not None),
        sum(1 for r, _ in rows if r.below_space_requirement),
    )


def _group_item(group: GroupPeriodRow) -> RpoRow:
    key: dict[str, object] = {
        "tenant_id": group.tenant_id,
        "tenant_name": group.tenant_name,
        "policy_id": group.policy_id,
        "policy_name": group.policy_name,
        "rpo_hours": group.rpo_hours,
    }
    return _rpo_row(
        key,
        group.by_status,
        group.protected_s,
        group.breached_s,
        group.breaches_in_period,
        group.open_breaches,
        group.below_space_requirement,
    )


def _total(groups: list[GroupPeriodRow]) -> RpoRow:
    """All groups as one row (a summary's): the sums of their figures."""
    return _rpo_row(
        {},
        Counter({s: sum(g.by_status[s] for g in groups) for s in RpoStatus}),
        sum(g.protected_s for g in groups),
        sum(g.breached_s for g in groups),
        sum(g.breaches_in_period for g in groups),
        sum(g.open_breaches for g in groups),
        sum(g.below_space_requirement for g in groups),
    )


class ComplianceService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.repo = ComplianceRepository(session)
        self.clock = clock

    def _filter(
        self,
        principal: Principal,
        tenant_id: uuid.UUID | None,
        policy_id: uuid.UUID | None,
        vm_id: uuid.UUID | None,
    ) -> ReportFilter:
        return ReportFilter(principal.tenant_scope, tenant_id, policy_id, vm_id)

    async def _vm_rows(
        self, f: ReportFilter, bounds: PeriodBounds, now: datetime, vm_ids: list[uuid.UUID] | None = None
    ) -> list[tuple[VmPeriodRow, RpoStatus, datetime | None, datetime | None]]:
        out = []
        for row in await self.repo.vm_period_rows(f, bounds.lo, bounds.hi, vm_ids):
            status, since, due = _vm_status(row, now)
            out.append((row, status, since, due))
        return out

    async def rpo_report(
        self,
        principal: Principal,
        *,
        tenant_id: uuid.UUID | None = None,
        policy_id: uuid.UUID | None = None,
        vm_id: uuid.UUID | None = None,
        status: RpoStatus | None = None,
        from_: datetime | None = None,
        to: datetime | None = None,
        group_by: GroupBy = GroupBy.VM,
        page: PageRequest = PageRequest(),
    ) -> RpoReport:
        now = self.clock.now()
        bounds = period_bounds(now, from_, to)
        f = self._filter(principal, tenant_id, policy_id, vm_id)
        if group_by is GroupBy.VM and status is None:
            # The common page (a portal's VM list): page in SQL, compute only the page's VMs.
            ids, total = await self.repo.vm_page(f, bounds.lo, bounds.hi, page.limit, page.offset)
            return RpoReport(
                period=Period(from_=bounds.lo, to=bounds.asked_to),
                group_by=group_by.value,
                items=await self._vm_items(await self._vm_rows(f, bounds, now, ids), bounds, now),
                total=total,
                limit=page.limit,
                offset=page.offset,
            )
        if group_by is not GroupBy.VM:
            # Aggregated by the database: a row per group, whatever the number of VMs.
            groups = await self.repo.grouped_period_rows(
                f, bounds.lo, bounds.hi, now, by_policy=group_by is GroupBy.POLICY, status=status
            )
            groups.sort(key=lambda g: (g.tenant_name, g.policy_name or "", str(g.policy_id or g.tenant_id)))
            return RpoReport(
                period=Period(from_=bounds.lo, to=bounds.asked_to),
                group_by=group_by.value,
                items=[_group_item(g) for g in groups[page.offset : page.offset + page.limit]],
                total=len(groups),
                limit=page.limit,
                offset=page.offset,
            )
        # A status filter needs every VM's status (derived from its latest point).
        rows = [r for r in await self._vm_rows(f, bounds, now) if r[1] is status]
        items = await self._vm_items(rows[page.offset : page.offset + page.limit], bounds, now)
        return RpoReport(
            period=Period(from_=bounds.lo, to=bounds.asked_to),
            group_by=group_by.value,
            items=items,
            total=len(rows),
            limit=page.limit,
            offset=page.offset,
        )

    async def _vm_items(
        self,
        rows: list[tuple[VmPeriodRow, RpoStatus, datetime | None, datetime | None]],
        bounds: PeriodBounds,
        now: datetime,
    ) -> list[RpoRow]:
        ids = [r.vm_id for r, *_ in rows]
        offsite_policies = await self.repo.offsite_policy_ids({r.policy_id for r, *_ in rows if r.policy_id})
        offsite_latest = await self.repo.latest_offsite_points(
            [r.vm_id for r, *_ in rows if r.policy_id in offsite_policies]
        )
        datastores = await self.repo.datastores_by_status(ids, ["warning", "critical"])
        breaches = await self.repo.breaches_in_period(ids, bounds.lo, bounds.hi)
        items = []
        for row, status, since, due in rows:
            item = _aggregate(
                [(row, status)],
                tenant_id=row.tenant_id,
                tenant_name=row.tenant_name,
                policy_id=row.policy_id,
                policy_name=row.policy_name,
                rpo_hours=row.rpo_hours,
            )
            item.vm_id, item.vm_name, item.status = row.vm_id, row.vm_name, status.value
            item.protected_since, item.due_at = since, due
            item.latest_restore_point_at = row.latest_point_at
            if row.latest_point_at is not None:
                item.age_hours = round((now - row.latest_point_at).total_seconds() / 3600, 3)
            if row.open_breach_started_at is not None and row.open_breach_cause is not None:
                item.open_breach = OpenBreachRef(
                    started_at=row.open_breach_started_at, cause=row.open_breach_cause
                )
            item.datastores_below_requirement = [
                DatastoreSpaceRead.model_validate(d) for d in datastores.get(row.vm_id, [])
            ]
            item.breaches = [breach_read(b, now, row.vm_name) for b in breaches.get(row.vm_id, [])]
            if row.policy_id in offsite_policies and row.rpo_hours is not None:
                copied = offsite_latest.get(row.vm_id)
                item.offsite = OffsiteRpo(
                    latest_copied_point_at=copied,
                    age_hours=round((now - copied).total_seconds() / 3600, 3) if copied else None,
                    status=rpo_status(copied, row.rpo_hours, now).value if copied else "not_copied",
                )
            items.append(item)
        return items

    async def rpo_vm(
        self, principal: Principal, vm_id: uuid.UUID, from_: datetime | None, to: datetime | None
    ) -> RpoRow:
        report = await self.rpo_report(principal, vm_id=vm_id, from_=from_, to=to)
        if not report.items:
            raise NotFound(f"VM {vm_id} does not exist or has not been protected in the period.")
        return report.items[0]

    async def breaches(
        self,
        principal: Principal,
        *,
        tenant_id: uuid.UUID | None,
        policy_id: uuid.UUID | None,
        vm_id: uuid.UUID | None,
        cause: str | None,
        open_only: bool | None,
        from_: datetime | None,
        to: datetime | None,
        page: PageRequest,
    ) -> tuple[Period, list[BreachRead], int]:
        now = self.clock.now()
        bounds = period_bounds(now, from_, to)
        found, total = await self.repo.list_breaches(
            self._filter(principal, tenant_id, policy_id, vm_id),
            bounds.lo,
            bounds.hi,
            cause,
            open_only,
            page,
        )
        return (
            Period(from_=bounds.lo, to=bounds.asked_to),
            [breach_read(b, now, name) for b, name in found],
            total,
        )

    # restores

    async def restore_slas(
        self,
        principal: Principal,
        *,
        tenant_id: uuid.UUID | None = None,
        vm_id: uuid.UUID | None = None,
        policy_id: uuid.UUID | None = None,
        restore_id: uuid.UUID | None = None,
        status: ClockStatus | None = None,
        from_: datetime | None = None,
        to: datetime | None = None,
    ) -> tuple[Period, list[RestoreSlaRead]]:
        """Restores requested in the period with both clocks as of now, newest first."""
        now = self.clock.now()
        bounds = period_bounds(now, from_, to)
        rows = await self.repo.restores_with_rto(
            principal.tenant_scope,
            tenant_id=tenant_id,
            vm_id=vm_id,
            policy_id=policy_id,
            restore_id=restore_id,
            requested_from=None if restore_id else bounds.lo,
            requested_to=None if restore_id else bounds.asked_to,
        )
        recorded = await self.repo.restore_slas([r.id for r, *_ in rows])
        reads = []
        for restore, point_policy_id, rto_hours, vm_name in rows:
            rto = rto_hours if rto_hours is not None else DEFAULT_RTO_HOURS
            clocks = clocks_of(restore, rto, now)
            if status is not None and status not in (clocks.initiation.status, clocks.completion.status):
                continue
            sla = recorded.get(restore.id)
            reads.append(
                RestoreSlaRead(
                    restore_id=restore.id,
                    tenant_id=restore.tenant_id,
                    vm_id=restore.vm_id,
                    vm_name=vm_name,
                    restore_point_id=restore.restore_point_id,
                    policy_id=point_policy_id,
                    state=restore.state,
                    source_location=restore.source_location,
                    requested_at=restore.requested_at,
                    initiated_at=restore.initiated_at,
                    completed_at=restore.completed_at,
                    initiation_window_hours=initiation_window(restore.source_location).total_seconds() / 3600,
                    rto_hours=rto,
                    initiation=_clock_read(clocks.initiation),
                    completion=_clock_read(clocks.completion),
                    recorded_at=sla.updated_at if sla else None,
                )
            )
        return Period(from_=bounds.lo, to=bounds.asked_to), reads

    async def restore_sla(self, principal: Principal, restore_id: uuid.UUID) -> RestoreSlaRead:
        _, found = await self.restore_slas(principal, restore_id=restore_id)
        if not found:
            raise NotFound(f"Restore {restore_id} does not exist.")
        return found[0]

    async def summary(
        self,
        principal: Principal,
        *,
        tenant_id: uuid.UUID | None,
        policy_id: uuid.UUID | None,
        from_: datetime | None,
        to: datetime | None,
    ) -> ComplianceSummary:
        now = self.clock.now()
        bounds = period_bounds(now, from_, to)
        f = self._filter(principal, tenant_id, policy_id, None)
        groups = await self.repo.grouped_period_rows(f, bounds.lo, bounds.hi, now, by_policy=False)
        rpo = _total(groups)
        causes = await self.repo.open_breach_causes(f, bounds.lo, bounds.hi)
        period, restores = await self.restore_slas(
            principal, tenant_id=tenant_id, policy_id=policy_id, from_=from_, to=to
        )
        return ComplianceSummary(
            period=period,
            generated_at=now,
            rpo=rpo,
            open_breaches_by_cause=causes,
            restores=restore_summary(restores),
        )


def _clock_read(clock: SlaClock) -> ClockRead:
    return ClockRead(
        deadline_at=clock.deadline_at,
        status=clock.status.value,
        at_risk_at=clock.at_risk_at,
        breached_at=clock.breached_at,
    )


def _counts(statuses: Iterable[str]) -> ClockCounts:
    return ClockCounts.model_validate(Counter(statuses))


def restore_summary(restores: list[RestoreSlaRead]) -> RestoreSlaSummary:
    active = [r for r in restores if r.completed_at is None]
    return RestoreSlaSummary(
        restores=len(restores),
        initiation=_counts(r.initiation.status for r in restores),
        completion=_counts(r.completion.status for r in restores),
        active_at_risk=sum(
            1 for r in active if ClockStatus.AT_RISK.value in (r.initiation.status, r.completion.status)
        ),
        active_breached=sum(
            1 for r in active if ClockStatus.BREACHED.value in (r.initiation.status, r.completion.status)
        ),
    )
