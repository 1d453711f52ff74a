from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, NOT_FOUND
from app.api.routing import PrefixRouter
from app.compliance.schemas import BreachRead, ComplianceSummary, RestoreSlaRead, RpoReport, RpoRow
from app.compliance.service import ComplianceService, GroupBy
from app.domain.compliance import BreachCause, ClockStatus, RpoStatus
from app.pagination import Page
from app.schemas import Instant

router = PrefixRouter(prefix="/compliance", tags=["compliance"], responses=AUTH_ERRORS)

From = Annotated[
    Instant | None,
    Query(alias="from", description="Start of the period (default: 30 days before 'to')."),
]
To = Annotated[Instant | None, Query(description="End of the period (default: now).")]


@router.get(
    "/rpo",
    response_model=RpoReport,
    summary="RPO compliance per VM, policy or tenant: status now, % of time compliant, breaches",
)
async def rpo_report(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    from_: From = None,
    to: To = None,
    tenant_id: uuid.UUID | None = None,
    policy_id: uuid.UUID | None = None,
    vm_id: uuid.UUID | None = None,
    status: Annotated[
        RpoStatus | None, Query(description="Only VMs in this status now (at_risk: above 80% of the RPO).")
    ] = None,
    group_by: GroupBy = GroupBy.VM,
) -> RpoReport:
    return await ComplianceService(session, ctx.clock).rpo_report(
        principal,
        tenant_id=tenant_id,
        policy_id=policy_id,
        vm_id=vm_id,
        status=status,
        from_=from_,
        to=to,
        group_by=group_by,
        page=page,
    )


@router.get(
    "/rpo/breaches",
    response_model=Page[BreachRead],
    summary="RPO breach intervals overlapping the period, newest first",
)
async def rpo_breaches(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    from_: From = None,
    to: To = None,
    tenant_id: uuid.UUID | None = None,
    policy_id: uuid.UUID | None = None,
    vm_id: uuid.UUID | None = None,
    cause: BreachCause | None = None,
    open: Annotated[bool | None, Query(description="Only open (true) or closed (false) breaches.")] = None,
) -> Page[BreachRead]:
    _, items, total = await ComplianceService(session, ctx.clock).breaches(
        principal,
        tenant_id=tenant_id,
        policy_id=policy_id,
        vm_id=vm_id,
        cause=cause.value if cause else None,
        open_only=open,
        from_=from_,
        to=to,
        page=page,
    )
    return Page.of(items, total, page)


@router.get(
    "/rpo/vms/{vm_id}",
    response_model=RpoRow,
    responses=NOT_FOUND,
    summary="One VM's RPO compliance with its breaches in the period",
)
async def rpo_vm(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    vm_id: uuid.UUID,
    from_: From = None,
    to: To = None,
) -> RpoRow:
    return await ComplianceService(session, ctx.clock).rpo_vm(principal, vm_id, from_, to)


@router.get(
    "/restores",
    response_model=Page[RestoreSlaRead],
    summary="Restore SLA clocks (initiation, completion) of restores requested in the period",
)
async def restore_slas(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    from_: From = None,
    to: To = None,
    tenant_id: uuid.UUID | None = None,
    policy_id: uuid.UUID | None = None,
    vm_id: uuid.UUID | None = None,
    status: Annotated[
        ClockStatus | None, Query(description="Only restores with a clock in this status.")
    ] = None,
) -> Page[RestoreSlaRead]:
    _, items = await ComplianceService(session, ctx.clock).restore_slas(
        principal, tenant_id=tenant_id, vm_id=vm_id, policy_id=policy_id, status=status, from_=from_, to=to
    )
    return Page.of(items[page.offset : page.offset + page.limit], len(items), page, exact=True)


@router.get(
    "/restores/{restore_id}",
    response_model=RestoreSlaRead,
    responses=NOT_FOUND,
    summary="One restore's SLA clocks",
)
async def restore_sla(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_id: uuid.UUID
) -> RestoreSlaRead:
    return await ComplianceService(session, ctx.clock).restore_sla(principal, restore_id)


@router.get(
    "/summary",
    response_model=ComplianceSummary,
    summary="Dashboard figures: RPO status counts, % compliant, open breaches by cause, restore SLAs",
)
async def summary(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    from_: From = None,
    to: To = None,
    tenant_id: uuid.UUID | None = None,
    policy_id: uuid.UUID | None = None,
) -> ComplianceSummary:
    return await ComplianceService(session, ctx.clock).summary(
        principal, tenant_id=tenant_id, policy_id=policy_id, from_=from_, to=to
    )
