"""The audit log, read-only: no endpoint writes, changes or deletes its events."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS
from app.api.routing import PrefixRouter
from app.audit.schemas import Actor, AuditEventRead, AuditFilter, Outcome
from app.audit.service import AuditService
from app.pagination import Page
from app.schemas import Instant

router = PrefixRouter(prefix="/audit-events", tags=["audit"], responses=AUTH_ERRORS)


@router.get(
    "",
    response_model=Page[AuditEventRead],
    summary="Mutating requests and failed logins, newest first (customers: their tenant's)",
)
async def list_audit_events(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    since: Annotated[Instant | None, Query(description="Events at or after this instant.")] = None,
    until: Annotated[Instant | None, Query(description="Events before this instant.")] = None,
    tenant_id: uuid.UUID | None = None,
    key_id: Annotated[uuid.UUID | None, Query(description="Made with this API key (or agent).")] = None,
    key_lookup_id: Annotated[
        str | None, Query(max_length=32, description="Made with a credential whose public part is this.")
    ] = None,
    actor: Actor | None = None,
    action: Annotated[
        str | None,
        Query(max_length=200, description="Exactly, e.g. 'POST /api/v1/restores/{restore_id}/approve'."),
    ] = None,
    object_id: Annotated[str | None, Query(max_length=100)] = None,
    outcome: Outcome | None = None,
) -> Page[AuditEventRead]:
    f = AuditFilter(
        since=since,
        until=until,
        tenant_id=tenant_id,
        key_id=key_id,
        key_lookup_id=key_lookup_id,
        actor=actor.value if actor else None,
        action=action,
        object_id=object_id,
        outcome=outcome.value if outcome else None,
    )
    items, total = await AuditService(session).list_page(principal, f, page)
    return Page.of(items, total, page)
