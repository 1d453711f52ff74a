"""All SQL about compliance: protection spans, RPO breaches, restore SLA records, reports."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Select, Table, and_, bindparam, case, exists, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.compliance.models import ProtectionSpan, RestoreSla, RpoBreach
from app.compliance.sql import TimeSql
from app.db.dialect import insert_ignoring_conflicts
from app.db.paging import total_for_page
from app.db.types import UTCDateTime
from app.domain.compliance import AT_RISK_FRACTION, RpoStatus
from app.domain.jobs import JobKind
from app.inventory.models import Datastore, VirtualMachine, vm_datastores
from app.jobs.models import Job
from app.pagination import PageRequest
from app.policies.models import Policy
from app.proxies.models import Proxy, proxy_hosts
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from app.tenants.models import Tenant

T = TypeVar("T")
#: Ids per ``IN (...)``: well under both dialects' bound-parameter limits.
CHUNK = 1000


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: The restore points the RPO counts: the VM's images. An application point (a database dump, a
#: file set) restores one database or directory, not the VM: hourly dumps must not hide nights
#: of failed image backups.
IMAGE_POINT = RestorePoint.kind == "image"


def _latest_point_at() -> Any:
    """The VM's latest image point time (an index walk on ``(vm_id, created_at)`` from the end)."""
    return (
        select(func.max(RestorePoint.created_at))
        .where(RestorePoint.vm_id == VirtualMachine.id, IMAGE_POINT)
        .correlate(VirtualMachine)
        .scalar_subquery()
    )


def _protectable_since() -> Any:
    """When the VM's current protection may have begun: when its protection last changed
    (policy edits, tags or folders changed in vCenter), else when it appeared (rows older than
    that stamp). A VM protected months after it appeared gets its RPO from then, not a breach
    backdated to its first sight."""
    return func.coalesce(VirtualMachine.protection_changed_at, VirtualMachine.first_seen_at)


#: Tolerance when two instants are compared as epochs (see points_ending).
EPOCH_MARGIN_S = 0.001


@dataclass(frozen=True)
class TrackedVm:
    """A protected VM as the RPO recorder sees it, with its open span and breach."""

    vm_id: uuid.UUID
    tenant_id: uuid.UUID
    policy_id: uuid.UUID
    host_id: uuid.UUID | None
    # When the VM appeared or its protection last began or changed policy (see _protectable_since).
    protectable_since: datetime
    rpo_hours: int
    policy_updated_at: datetime
    # When the policy's RPO last changed (None: never): no breach of it starts earlier.
    rpo_changed_at: datetime | None
    latest_point_at: datetime | None
    span_id: uuid.UUID | None
    span_policy_id: uuid.UUID | None
    span_started_at: datetime | None
    breach: RpoBreach | None


@dataclass(frozen=True)
class JobEvidence:
    state: str
    waiting_reason: str | None
    error: str | None


@dataclass(frozen=True)
class ReportFilter:
    scope: uuid.UUID | None
    tenant_id: uuid.UUID | None = None
    policy_id: uuid.UUID | None = None
    vm_id: uuid.UUID | None = None


@dataclass(frozen=True)
class VmPeriodRow:
    """One VM of an RPO report: current facts and its period figures, as one query returns them."""

    vm_id: uuid.UUID
    vm_name: str
    tenant_id: uuid.UUID
    tenant_name: str
    protected: bool
    policy_id: uuid.UUID | None
    policy_name: str | None
    rpo_hours: int | None
    protectable_since: datetime
    policy_updated_at: datetime | None
    latest_point_at: datetime | None
    span_started_at: datetime | None
    protected_s: float
    breached_s: float
    breaches_in_period: int
    open_breach_started_at: datetime | None
    open_breach_cause: str | None
    below_space_requirement: bool


#: The statuses a grouped report counts, in its column order.
GROUP_STATUSES = (RpoStatus.COMPLIANT, RpoStatus.AT_RISK, RpoStatus.BREACHED, RpoStatus.UNPROTECTED)


@dataclass(frozen=True)
class GroupPeriodRow:
    """One tenant's (or tenant and policy's) VMs of an RPO report, aggregated by the database."""

    tenant_id: uuid.UUID
    tenant_name: str
    policy_id: uuid.UUID | None
    policy_name: str | None
    rpo_hours: int | None
    #: VMs by status; every VM has one, so their sum is the group's VM count.
    by_status: dict[RpoStatus, int]
    protected_s: float
    breached_s: float
    breaches_in_period: int
    open_breaches: int
    below_space_requirement: int


class ComplianceRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.time = TimeSql(session)

    # RPO recorder

    async def protected_vms(self) -> list[TrackedVm]:
        span, breach = ProtectionSpan, RpoBreach
        stmt = (
            select(
                VirtualMachine.id,
                VirtualMachine.tenant_id,
                VirtualMachine.protection_policy_id,
                VirtualMachine.host_id,
                _protectable_since(),
                Policy.rpo_hours,
                Policy.updated_at,
                Policy.rpo_changed_at,
                _latest_point_at(),
                span.id,
                span.policy_id,
                span.started_at,
                breach,
            )
            .join(Policy, Policy.id == VirtualMachine.protection_policy_id)
            .outerjoin(span, and_(span.vm_id == VirtualMachine.id, span.ended_at.is_(None)))
            .outerjoin(breach, and_(breach.vm_id == VirtualMachine.id, breach.ended_at.is_(None)))
            .where(VirtualMachine.protection_status == "protected", VirtualMachine.gone_at.is_(None))
            .order_by(VirtualMachine.id)
        )
        return [TrackedVm(*row) for row in (await self.session.execute(stmt)).tuples()]

    async def open_spans_not_protected(self) -> list[tuple[uuid.UUID, uuid.UUID]]:
        """(span id, VM id) of open spans whose VM is no longer protected (or gone)."""
        still = and_(VirtualMachine.protection_status == "protected", VirtualMachine.gone_at.is_(None))
        stmt = (
            select(ProtectionSpan.id, ProtectionSpan.vm_id)
            .join(VirtualMachine, VirtualMachine.id == ProtectionSpan.vm_id)
            .where(ProtectionSpan.ended_at.is_(None), ~still)
        )
        return list((await self.session.execute(stmt)).tuples())

    async def vms_with_spans(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """Of these VMs, those that had a protection span before, with its latest end."""
        out: dict[uuid.UUID, datetime] = {}
        for part in chunks(vm_ids):
            rows = await self.session.execute(
                select(ProtectionSpan.vm_id, func.max(ProtectionSpan.ended_at))
                .where(ProtectionSpan.vm_id.in_(part))
                .group_by(ProtectionSpan.vm_id)
            )
            out.update({vm_id: ended for vm_id, ended in rows.tuples() if ended is not None})
        return out

    async def last_breach_ends(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        out: dict[uuid.UUID, datetime] = {}
        for part in chunks(vm_ids):
            rows = await self.session.execute(
                select(RpoBreach.vm_id, func.max(RpoBreach.ended_at))
                .where(RpoBreach.vm_id.in_(part))
                .group_by(RpoBreach.vm_id)
            )
            out.update({vm_id: ended for vm_id, ended in rows.tuples() if ended is not None})
        return out

    async def open_spans(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, tuple[uuid.UUID, datetime]]:
        out: dict[uuid.UUID, tuple[uuid.UUID, datetime]] = {}
        for part in chunks(vm_ids):
            rows = await self.session.execute(
                select(ProtectionSpan.vm_id, ProtectionSpan.id, ProtectionSpan.started_at).where(
                    ProtectionSpan.vm_id.in_(part), ProtectionSpan.ended_at.is_(None)
                )
            )
            out.update({vm_id: (span_id, started) for vm_id, span_id, started in rows.tuples()})
        return out

    async def open_spans_and_breaches(self, rows: Iterable[dict[str, Any]], table: Any) -> None:
        await insert_ignoring_conflicts(self.session, table, list(rows))

    async def close_span(self, span_id: uuid.UUID, at: datetime) -> bool:
        result = await self.session.execute(
            update(ProtectionSpan)
            .where(ProtectionSpan.id == span_id, ProtectionSpan.ended_at.is_(None))
            .values(ended_at=at)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def open_breach_of(self, vm_id: uuid.UUID) -> RpoBreach | None:
        stmt = select(RpoBreach).where(RpoBreach.vm_id == vm_id, RpoBreach.ended_at.is_(None))
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def close_breach(self, breach_id: uuid.UUID, at: datetime, resolution: str, now: datetime) -> bool:
        """Compare-and-set: only an open breach closes, so racing recorders close it once."""
        result = await self.session.execute(
            update(RpoBreach)
            .where(RpoBreach.id == breach_id, RpoBreach.ended_at.is_(None))
            .values(ended_at=at, resolution=resolution, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def set_breach_causes(
        self, changes: Sequence[tuple[uuid.UUID, str, list[str], str]], now: datetime
    ) -> None:
        """(breach id, cause, causes, detail) of open breaches, in one executemany."""
        if not changes:
            return
        table = cast(Table, RpoBreach.__table__)
        await self.session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.ended_at.is_(None))
            .values(
                cause=bindparam("b_cause"),
                causes=bindparam("b_causes", type_=table.c.causes.type),
                detail=bindparam("b_detail"),
                updated_at=now,
            ),
            [{"b_id": i, "b_cause": c, "b_causes": cs, "b_detail": d} for i, c, cs, d in changes],
        )

    async def points_ending(self, breach_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """Per open breach, its VM's first restore point newer than the breach's anchor
        (``started_at - rpo``): the point that brought the VM back into compliance."""
        t = self.time
        out: dict[uuid.UUID, datetime] = {}
        for part in chunks(breach_ids):
            # Epochs are floats on SQLite (julianday x 86400, tens of microseconds off): the anchor
            # point itself would pass as newer about half the time. Points of a VM are minutes
            # apart at the least, so a millisecond's margin tells them apart on both dialects.
            anchor = t.epoch(RpoBreach.started_at) - RpoBreach.rpo_hours * 3600.0 + EPOCH_MARGIN_S
            rows = await self.session.execute(
                select(RpoBreach.id, func.min(RestorePoint.created_at))
                .join(RestorePoint, RestorePoint.vm_id == RpoBreach.vm_id)
                .where(RpoBreach.id.in_(part), IMAGE_POINT, t.epoch(RestorePoint.created_at) > anchor)
                .group_by(RpoBreach.id)
            )
            out.update({breach_id: first for breach_id, first in rows.tuples() if first is not None})
        return out

    async def close_breaches(self, closes: Sequence[tuple[uuid.UUID, datetime, str]], now: datetime) -> None:
        """Compare-and-set closes of many breaches in one round trip (executemany)."""
        if not closes:
            return
        table = cast(Table, RpoBreach.__table__)  # Core: a plain executemany, not ORM bulk
        await self.session.execute(
            update(table)
            .where(table.c.id == bindparam("b_id"), table.c.ended_at.is_(None))
            .values(ended_at=bindparam("b_end"), resolution=bindparam("b_resolution"), updated_at=now),
            [{"b_id": i, "b_end": end, "b_resolution": res} for i, end, res in closes],
        )

    async def latest_backup_jobs(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobEvidence]:
        out: dict[uuid.UUID, JobEvidence] = {}
        for part in chunks(vm_ids):
            rank = func.row_number().over(
                partition_by=Job.vm_id, order_by=(Job.created_at.desc(), Job.id.desc())
            )
            ranked = (
                select(Job.vm_id, Job.state, Job.waiting_reason, Job.error, rank.label("rank"))
                .where(Job.kind == JobKind.BACKUP.value, Job.vm_id.in_(part))
                .subquery()
            )
            rows = await self.session.execute(
                select(ranked.c.vm_id, ranked.c.state, ranked.c.waiting_reason, ranked.c.error).where(
                    ranked.c.rank == 1
                )
            )
            for vm_id, state, waiting, error in rows.tuples():
                out[vm_id] = JobEvidence(state, waiting, error)
        return out

    async def hosts_with_online_proxy(self, online_since: datetime) -> tuple[bool, set[uuid.UUID]]:
        """(a proxy serving every host is online, hosts served by an online proxy)."""
        everywhere = (
            await self.session.execute(
                select(func.count()).where(
                    Proxy.serves_all_hosts.is_(True), Proxy.last_heartbeat_at >= online_since
                )
            )
        ).scalar_one()
        served = (
            await self.session.execute(
                select(proxy_hosts.c.host_id)
                .join(Proxy, Proxy.id == proxy_hosts.c.proxy_id)
                .where(Proxy.last_heartbeat_at >= online_since)
            )
        ).scalars()
        return bool(everywhere), set(served)

    async def datastores_by_status(
        self, vm_ids: Sequence[uuid.UUID], statuses: Sequence[str]
    ) -> dict[uuid.UUID, list[Datastore]]:
        out: dict[uuid.UUID, list[Datastore]] = defaultdict(list)
        for part in chunks(vm_ids):
            rows = await self.session.execute(
                select(vm_datastores.c.vm_id, Datastore)
                .join(Datastore, Datastore.id == vm_datastores.c.datastore_id)
                .where(
                    vm_datastores.c.vm_id.in_(part),
                    Datastore.space_status.in_(statuses),
                    Datastore.gone_at.is_(None),
                )
                .order_by(Datastore.name)
            )
            for vm_id, datastore in rows.tuples():
                out[vm_id].append(datastore)
        return out

    # RPO reports

    def _period_vm_filter(self, f: ReportFilter, lo: datetime, hi: datetime) -> list[Any]:
        span = ProtectionSpan
        protected_now = and_(
            VirtualMachine.protection_status == "protected", VirtualMachine.gone_at.is_(None)
        )
        spanned = exists(
            select(1).where(
                span.vm_id == VirtualMachine.id,
                span.started_at < hi,
                or_(span.ended_at.is_(None), span.ended_at > lo),
            )
        )
        conditions: list[Any] = [or_(protected_now, spanned)]
        for column, value in (
            (VirtualMachine.tenant_id, f.scope),
            (VirtualMachine.tenant_id, f.tenant_id),
            (VirtualMachine.id, f.vm_id),
            (VirtualMachine.protection_policy_id, f.policy_id),
        ):
            if value is not None:
                conditions.append(column == value)
        return conditions

    async def offsite_policy_ids(self, policy_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        if not policy_ids:
            return set()
        rows = await self.session.execute(
            select(Policy.id).where(Policy.id.in_(list(policy_ids)), Policy.offsite_copy.is_(True))
        )
        return set(rows.scalars())

    async def latest_offsite_points(self, vm_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """Per VM, when its newest image point with a complete offsite copy was taken."""
        if not vm_ids:
            return {}
        rows = await self.session.execute(
            select(RestorePoint.vm_id, func.max(RestorePoint.created_at))
            .where(RestorePoint.vm_id.in_(list(vm_ids)), IMAGE_POINT, RestorePoint.copy_status == "offsite")
            .group_by(RestorePoint.vm_id)
        )
        return {vm_id: at for vm_id, at in rows.tuples() if at is not None}

    async def vm_page(
        self, f: ReportFilter, lo: datetime, hi: datetime, limit: int, offset: int
    ) -> tuple[list[uuid.UUID], int]:
        """One page of the report's VMs (name order) and their total, without computing any figures:
        a page of a 10,000-VM tenant then costs its 50 VMs, not the tenant."""
        where = self._period_vm_filter(f, lo, hi)
        total = (await self.session.execute(select(func.count()).where(*where))).scalar_one()
        ids = await self.session.execute(
            select(VirtualMachine.id)
            .where(*where)
            .order_by(VirtualMachine.name, VirtualMachine.id)
            .limit(limit)
            .offset(offset)
        )
        return list(ids.scalars()), int(total)

    async def vm_period_rows(
        self, f: ReportFilter, lo: datetime, hi: datetime, vm_ids: Sequence[uuid.UUID] | None = None
    ) -> list[VmPeriodRow]:
        """The report's VMs (or only ``vm_ids`` of them) with their period figures, in one query
        (name order).

        Breach and protection seconds are summed by the database from the intervals clipped
        to ``[lo, hi)``; ``hi`` must not be later than now (open intervals end at ``hi``).
        """
        if vm_ids is not None and not vm_ids:
            return []
        stmt = self._vm_period_select(f, lo, hi, vm_ids).order_by(VirtualMachine.name, VirtualMachine.id)
        rows = await self.session.execute(stmt)
        # The statement's column labels are VmPeriodRow's field names.
        return [
            VmPeriodRow(
                **{
                    **m,
                    "protected": bool(m["protected"]),
                    "protected_s": float(m["protected_s"]),
                    "breached_s": float(m["breached_s"]),
                    "breaches_in_period": int(m["breaches_in_period"]),
                    "below_space_requirement": bool(m["below_space_requirement"]),
                }
            )
            for m in rows.mappings()
        ]

    async def grouped_period_rows(
        self,
        f: ReportFilter,
        lo: datetime,
        hi: datetime,
        now: datetime,
        *,
        by_policy: bool,
        status: RpoStatus | None = None,
    ) -> list[GroupPeriodRow]:
        """The report's VMs aggregated per tenant (and policy) by the database: a dashboard's
        grouped view of 10,000 VMs returns a row per group, not a row per VM.

        Each VM's status is derived in SQL as the report service derives it from a
        :class:`VmPeriodRow` (tests check the two against each other).
        """
        # Two steps, each materialized: inlined, each use of a VM column in the status expression
        # would run its correlated subquery (latest point, open span) again, and each count by
        # status below would derive the status again (the whole query ten times slower). The
        # second step carries only what the groups need, and derives the anchor inside the
        # status: a third step that copied every column of 10,000 rows once more, for the anchor
        # alone, made the query 10-20% slower (docs/benchmarks.md, scheduler, sixth round).
        vms = self._vm_period_select(f, lo, hi).cte("report_vms").prefix_with("MATERIALIZED")
        v = vms.c
        per_vm = (
            select(
                v.tenant_id,
                v.tenant_name,
                v.policy_id,
                v.policy_name,
                v.rpo_hours,
                v.protected_s,
                v.breached_s,
                v.breaches_in_period,
                v.open_breach_started_at,
                v.below_space_requirement,
                self._status_sql(v, self._anchor_sql(vms, now), now).label("status"),
            )
            .cte("report_statuses")
            .prefix_with("MATERIALIZED")
        )
        c = per_vm.c
        keys = [c.tenant_id, c.tenant_name]
        if by_policy:
            keys += [c.policy_id, c.policy_name, c.rpo_hours]

        def count_where(condition: Any) -> Any:
            return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

        stmt = select(
            *keys,
            *(count_where(c.status == s.value) for s in GROUP_STATUSES),
            func.coalesce(func.sum(c.protected_s), 0.0),
            func.coalesce(func.sum(c.breached_s), 0.0),
            func.coalesce(func.sum(c.breaches_in_period), 0),
            count_where(c.open_breach_started_at.is_not(None)),
            count_where(c.below_space_requirement),
        ).group_by(*keys)
        if status is not None:
            stmt = stmt.where(c.status == status.value)
        out = []
        for row in (await self.session.execute(stmt)).tuples():
            key, figures = row[: len(keys)], row[len(keys) :]
            tenant_id, tenant_name, policy_id, policy_name, rpo = (*key, None, None, None)[:5]
            per_status = [int(x) for x in figures[: len(GROUP_STATUSES)]]
            protected_s, breached_s, n, open_n, below_n = figures[len(GROUP_STATUSES) :]
            out.append(
                GroupPeriodRow(
                    tenant_id,
                    tenant_name,
                    policy_id,
                    policy_name,
                    rpo,
                    dict(zip(GROUP_STATUSES, per_status, strict=True)),
                    float(protected_s),
                    float(breached_s),
                    int(n),
                    int(open_n),
                    int(below_n),
                )
            )
        return out

    async def open_breach_causes(self, f: ReportFilter, lo: datetime, hi: datetime) -> dict[str, int]:
        """Open breaches of the report's VMs, counted by cause."""
        vms = self._vm_period_select(f, lo, hi).subquery()
        cause = vms.c.open_breach_cause
        rows = await self.session.execute(
            select(cause, func.count()).where(cause.is_not(None)).group_by(cause).order_by(cause)
        )
        return {str(c): int(n) for c, n in rows.tuples()}

    def _anchor_sql(self, vms: Any, now: datetime) -> Any:
        """Where a VM's RPO clock starts (``rpo_anchor``): its latest restore point, not earlier
        than the start of its protection (the open span's, else the recorder's estimate). On
        timestamps, which both dialects order correctly (SQLite's are text of one format)."""
        c = vms.c
        instant = literal(now, UTCDateTime())
        t = self.time
        estimated_since = t.least(
            instant,
            t.greatest(c.protectable_since, func.coalesce(c.policy_updated_at, c.protectable_since)),
        )
        since = func.coalesce(c.span_started_at, estimated_since)
        return t.greatest(func.coalesce(c.latest_point_at, since), since)

    def _status_sql(self, c: Any, anchor_at: Any, now: datetime) -> Any:
        """A VM's RPO status (``rpo_status``) in SQL: unprotected without a protecting policy, else
        by the age of its anchor against the RPO, in epoch seconds (``c``: the VM's columns)."""
        t = self.time
        age = t.value(now) - t.epoch(anchor_at)
        rpo_s = c.rpo_hours * 3600.0
        return case(
            (or_(c.protected.is_not(True), c.rpo_hours.is_(None)), RpoStatus.UNPROTECTED.value),
            (age > rpo_s, RpoStatus.BREACHED.value),
            (age > rpo_s * AT_RISK_FRACTION, RpoStatus.AT_RISK.value),
            else_=RpoStatus.COMPLIANT.value,
        )

    def _vm_period_select(
        self, f: ReportFilter, lo: datetime, hi: datetime, vm_ids: Sequence[uuid.UUID] | None = None
    ) -> Select[Any]:
        """The statement behind :meth:`vm_period_rows`, its columns named, so that the grouped
        report can aggregate it in the database."""
        t = self.time
        span, breach = ProtectionSpan, RpoBreach

        def only(column: Any) -> list[Any]:
            return [column.in_(vm_ids)] if vm_ids is not None else []

        spans = (
            select(
                span.vm_id.label("vm_id"),
                func.sum(t.clipped_seconds(span.started_at, span.ended_at, lo, hi)).label("seconds"),
            )
            .where(span.started_at < hi, or_(span.ended_at.is_(None), span.ended_at > lo), *only(span.vm_id))
            .group_by(span.vm_id)
            .subquery()
        )
        breaches = (
            select(
                breach.vm_id.label("vm_id"),
                func.sum(t.clipped_seconds(breach.started_at, breach.ended_at, lo, hi)).label("seconds"),
                func.count().label("n"),
            )
            .where(
                breach.started_at < hi,
                or_(breach.ended_at.is_(None), breach.ended_at > lo),
                *only(breach.vm_id),
            )
            .group_by(breach.vm_id)
            .subquery()
        )
        open_breach = select(breach).where(breach.ended_at.is_(None), *only(breach.vm_id)).subquery()
        open_span_started = (
            select(span.started_at)
            .where(span.vm_id == VirtualMachine.id, span.ended_at.is_(None))
            .correlate(VirtualMachine)
            .scalar_subquery()
        )
        below_space = exists(
            select(1)
            .select_from(vm_datastores.join(Datastore, Datastore.id == vm_datastores.c.datastore_id))
            .where(
                vm_datastores.c.vm_id == VirtualMachine.id,
                Datastore.space_status.in_(("warning", "critical")),
                Datastore.gone_at.is_(None),
            )
        )
        protected = and_(VirtualMachine.protection_status == "protected", VirtualMachine.gone_at.is_(None))
        stmt = (
            select(
                VirtualMachine.id.label("vm_id"),
                VirtualMachine.name.label("vm_name"),
                VirtualMachine.tenant_id.label("tenant_id"),
                Tenant.name.label("tenant_name"),
                protected.label("protected"),
                Policy.id.label("policy_id"),
                Policy.name.label("policy_name"),
                Policy.rpo_hours.label("rpo_hours"),
                _protectable_since().label("protectable_since"),
                Policy.updated_at.label("policy_updated_at"),
                _latest_point_at().label("latest_point_at"),
                open_span_started.label("span_started_at"),
                func.coalesce(spans.c.seconds, 0.0).label("protected_s"),
                func.coalesce(breaches.c.seconds, 0.0).label("breached_s"),
                func.coalesce(breaches.c.n, 0).label("breaches_in_period"),
                open_breach.c.started_at.label("open_breach_started_at"),
                open_breach.c.cause.label("open_breach_cause"),
                below_space.label("below_space_requirement"),
            )
            .join(Tenant, Tenant.id == VirtualMachine.tenant_id)
            .outerjoin(Policy, and_(Policy.id == VirtualMachine.protection_policy_id, protected))
            .outerjoin(spans, spans.c.vm_id == VirtualMachine.id)
            .outerjoin(breaches, breaches.c.vm_id == VirtualMachine.id)
            .outerjoin(open_breach, open_breach.c.vm_id == VirtualMachine.id)
            .where(*self._period_vm_filter(f, lo, hi), *only(VirtualMachine.id))
        )
        return stmt

    async def breaches_in_period(
        self, vm_ids: Sequence[uuid.UUID], lo: datetime, hi: datetime
    ) -> dict[uuid.UUID, list[RpoBreach]]:
        out: dict[uuid.UUID, list[RpoBreach]] = defaultdict(list)
        for part in chunks(vm_ids):
            rows = await self.session.execute(
                select(RpoBreach)
                .where(
                    RpoBreach.vm_id.in_(part),
                    RpoBreach.started_at < hi,
                    or_(RpoBreach.ended_at.is_(None), RpoBreach.ended_at > lo),
                )
                .order_by(RpoBreach.started_at.desc(), RpoBreach.id)
            )
            for b in rows.scalars():
                out[b.vm_id].append(b)
        return out

    async def list_breaches(
        self,
        f: ReportFilter,
        lo: datetime,
        hi: datetime,
        cause: str | None,
        open_only: bool | None,
        page: PageRequest,
    ) -> tuple[list[tuple[RpoBreach, str]], int]:
        stmt = (
            select(RpoBreach, VirtualMachine.name)
            .join(VirtualMachine, VirtualMachine.id == RpoBreach.vm_id)
            .where(RpoBreach.started_at < hi, or_(RpoBreach.ended_at.is_(None), RpoBreach.ended_at > lo))
        )
        for column, value in (
            (RpoBreach.tenant_id, f.scope),
            (RpoBreach.tenant_id, f.tenant_id),
            (RpoBreach.vm_id, f.vm_id),
            (RpoBreach.policy_id, f.policy_id),
            (RpoBreach.cause, cause),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if open_only is not None:
            stmt = stmt.where(RpoBreach.ended_at.is_(None) if open_only else RpoBreach.ended_at.is_not(None))
        rows = await self.session.execute(
            stmt.order_by(RpoBreach.started_at.desc(), RpoBreach.id).limit(page.limit).offset(page.offset)
        )
        found = [(b, name) for b, name in rows.tuples()]
        return found, await total_for_page(self.session, stmt, page, len(found))

    # restore SLA

    async def restores_with_rto(
        self,
        scope: uuid.UUID | None,
        tenant_id: uuid.UUID | None = None,
        vm_id: uuid.UUID | None = None,
        policy_id: uuid.UUID | None = None,
        restore_id: uuid.UUID | None = None,
        requested_from: datetime | None = None,
        requested_to: datetime | None = None,
        unsettled_only: bool = False,
        active_only: bool = False,
    ) -> list[tuple[Restore, uuid.UUID | None, int | None, str]]:
        """Restores (newest first) with their point's policy, their RTO and the VM's name.

        The RTO a restore's clocks were recorded with stands (a policy changed or deleted since
        does not rewrite a reported result), and a restore whose point was pruned since stays
        listed (its point id is null then)."""
        stmt = (
            select(
                Restore,
                RestorePoint.policy_id,
                func.coalesce(RestoreSla.rto_hours, Policy.rto_hours),
                VirtualMachine.name,
            )
            .outerjoin(RestorePoint, RestorePoint.id == Restore.restore_point_id)
            .outerjoin(Policy, Policy.id == RestorePoint.policy_id)
            .outerjoin(RestoreSla, RestoreSla.restore_id == Restore.id)
            .join(VirtualMachine, VirtualMachine.id == Restore.vm_id)
        )
        for column, value in (
            (Restore.tenant_id, scope),
            (Restore.tenant_id, tenant_id),
            (Restore.vm_id, vm_id),
            (RestorePoint.policy_id, policy_id),
            (Restore.id, restore_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if requested_from is not None:
            stmt = stmt.where(Restore.requested_at >= requested_from)
        if requested_to is not None:
            stmt = stmt.where(Restore.requested_at < requested_to)
        if unsettled_only:  # RestoreSla is joined above
            stmt = stmt.where(or_(RestoreSla.restore_id.is_(None), RestoreSla.settled.is_(False)))
        if active_only:
            stmt = stmt.where(Restore.completed_at.is_(None))
        rows = await self.session.execute(stmt.order_by(Restore.requested_at.desc(), Restore.id))
        return [(r, pid, rto, name) for r, pid, rto, name in rows.tuples()]

    async def restore_slas(self, restore_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, RestoreSla]:
        out: dict[uuid.UUID, RestoreSla] = {}
        for part in chunks(restore_ids):
            rows = await self.session.execute(select(RestoreSla).where(RestoreSla.restore_id.in_(part)))
            out.update({s.restore_id: s for s in rows.scalars()})
        return out

    async def save_restore_sla(self, values: dict[str, Any], exists_already: bool) -> None:
        if exists_already:
            restore_id = values["restore_id"]
            changes = {k: v for k, v in values.items() if k != "restore_id"}
            await self.session.execute(
                update(RestoreSla)
                .where(RestoreSla.restore_id == restore_id)
                .values(**changes)
                .execution_options(synchronize_session=False)
            )
        else:
            await insert_ignoring_conflicts(self.session, RestoreSla.__table__, [values])
