"""Monitoring alerts: open while their condition lasts, closed by the alert loop when it clears."""

from __future__ import annotations

import uuid

from app.alerts.schemas import AlertKind, AlertRead, AlertState
from app.alerts.service import AlertService
from app.api.deps import CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS
from app.api.routing import PrefixRouter
from app.pagination import Page

router = PrefixRouter(prefix="/alerts", tags=["alerts"], responses=AUTH_ERRORS)


@router.get(
    "",
    response_model=Page[AlertRead],
    summary="Alerts, newest first; open ones by default (customers: their tenant's)",
)
async def list_alerts(
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    state: AlertState = AlertState.OPEN,
    kind: AlertKind | None = None,
    tenant_id: uuid.UUID | None = None,
) -> Page[AlertRead]:
    items, total = await AlertService(session).list_page(principal, state, kind, tenant_id, page)
    return Page.of([AlertRead.model_validate(a) for a in items], total, page)
