"""Opening, revising and closing alerts, each change announced to the operators' integrations."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.alerts.models import Alert
from app.alerts.repository import AlertRepository
from app.alerts.schemas import AlertKind, AlertRead, AlertState, Condition, Severity
from app.auth.principal import Principal
from app.integrations.outbox import emit_alert_event
from app.pagination import PageRequest

VERIFY_KEY = f"{AlertKind.VERIFY_DAMAGE.value}:onsite"


@dataclass
class Reconciled:
    opened: int = 0
    closed: int = 0
    revised: int = 0


def _row(condition: Condition, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "key": condition.key,
        "kind": condition.kind.value,
        "severity": condition.severity.value,
        "tenant_id": condition.tenant_id,
        "subject_type": condition.subject_type,
        "subject_id": condition.subject_id,
        "message": condition.message,
        "detail": condition.detail,
        "opened_at": now,
        "closed_at": None,
    }


class AlertService:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.repo = AlertRepository(session)

    async def list_page(
        self,
        principal: Principal,
        state: AlertState,
        kind: AlertKind | None,
        tenant_id: uuid.UUID | None,
        page: PageRequest,
    ) -> tuple[list[Alert], int]:
        """Operators see every alert; customers their tenant's (their VMs' backups, RPO and
        snapshots, their datastores), never the service's own parts (proxies, repository)."""
        return await self.repo.list_page(
            principal.tenant_scope, state.value, kind.value if kind else None, tenant_id, page
        )

    async def reconcile(
        self, kinds: list[AlertKind], wanted: dict[str, Condition], now: datetime
    ) -> Reconciled:
        """Make the open alerts of ``kinds`` match ``wanted``: open what is new, close what
        cleared, revise what changed. Safe against another evaluator doing the same at once
        (unique open key, compare-and-set closes): each change is made, and announced, once."""
        done = Reconciled()
        current = {a.key: a for a in await self.repo.open_alerts([k.value for k in kinds])}
        for key, alert in current.items():
            condition = wanted.get(key)
            if condition is None:
                if await self.repo.close(alert.id, now):
                    done.closed += 1
                    await self._announce(alert, "alert.closed", now, {"closed_at": now}, occurred_at=now)
            elif (condition.severity.value, condition.message, condition.detail) != (
                alert.severity,
                alert.message,
                alert.detail,
            ):
                # A datastore's alert follows its space; messages follow the latest cause. A
                # change of severity is announced (a datastore gone below 10%: backups now stop);
                # a new wording alone is not. The revision is a compare-and-set on the severity
                # read, so of two evaluators at once only one announces it.
                revised = await self.repo.revise(
                    alert.id, alert.severity, condition.severity.value, condition.message, condition.detail
                )
                done.revised += int(revised)
                if revised and condition.severity.value != alert.severity:
                    await self._announce(
                        alert,
                        "alert.severity_changed",
                        now,
                        {
                            "severity": condition.severity.value,
                            "message": condition.message,
                            "detail": condition.detail,
                        },
                        occurred_at=now,
                        event_key=f"alert.severity_changed:{condition.severity.value}:{now.isoformat()}",
                    )
        rows = [_row(c, now) for key, c in wanted.items() if key not in current]
        for alert in await self.repo.open_new(rows):
            done.opened += 1
            await self._announce(alert, "alert.opened", now)
        return done

    async def record_verify(self, now: datetime, damaged: bool, summary: dict[str, Any]) -> Reconciled:
        """The outcome of a repository verify: damage opens (or updates) the verify alert, a
        clean run closes it."""
        wanted: dict[str, Condition] = {}
        if damaged:
            points = summary.get("restore_points_affected") or []
            wanted[VERIFY_KEY] = Condition(
                key=VERIFY_KEY,
                kind=AlertKind.VERIFY_DAMAGE,
                severity=Severity.CRITICAL,
                message=(
                    f"Repository verify found {summary.get('chunks_damaged', 0)} damaged and "
                    f"{summary.get('chunks_missing', 0)} missing chunks; {len(points)} restore point(s) "
                    "cannot be fully restored (see detail)"
                ),
                subject_type="repository",
                subject_id="onsite",
                detail=summary,
            )
        return await self.reconcile([AlertKind.VERIFY_DAMAGE], wanted, now)

    async def _announce(
        self,
        alert: Alert,
        event_type: str,
        now: datetime,
        changes: dict[str, Any] | None = None,
        *,
        occurred_at: datetime | None = None,
        event_key: str | None = None,
    ) -> None:
        """Queue the change for the operators' integrations (signed webhooks), in this
        transaction: sent if and only if the change commits. ``changes``: what the alert's row
        does not show yet (the update made in this transaction)."""
        read = AlertRead.model_validate(alert)
        if changes:
            read = read.model_copy(update=changes)
        await emit_alert_event(
            self.session,
            now,
            alert_id=alert.id,
            event_type=event_type,
            data=read.model_dump(mode="json"),
            occurred_at=occurred_at or alert.opened_at,
            event_key=event_key,
        )
