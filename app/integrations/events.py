"""Which outbound events a restore has produced so far, computed from its catalog state (no I/O).

An event is named by a key that is stable for the restore ("initiated", "progress:50",
"sla_breached:completion"): the emitter enqueues the keys that have no message yet, so emitting
is idempotent whatever the number of replicas or restarts. Events are ordered by when they
happened, then by their place in a restore's life.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.domain.jobs import ACTIVE_RESTORE_STATES

#: Progress milestones (percent of the bytes to restore) reported while a restore runs.
MILESTONES = (25, 50, 75)

ACTIVE_STATES = ACTIVE_RESTORE_STATES
_ENDED = {"succeeded": "restore.completed", "failed": "restore.failed", "cancelled": "restore.cancelled"}
_CLOCKS = ("initiation", "completion")


@dataclass(frozen=True)
class RestoreFacts:
    """What the emitter read about one restore (the restore row, its job, its recorded SLA)."""

    restore_id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    vm_name: str
    type: str
    target: str
    state: str
    approval_required: bool
    requested_at: datetime
    initiated_at: datetime | None
    completed_at: datetime | None
    error: str | None
    integration_id: uuid.UUID | None
    ticket_id: str | None
    percent: float | None = None
    progress_at: datetime | None = None
    #: Per clock (initiation, completion): status, deadline, at-risk and breached instants.
    sla: dict[str, dict[str, Any]] = field(default_factory=dict)

    def fingerprint(self) -> tuple[Any, ...]:
        """Changes whenever an event may have appeared (used to skip unchanged restores)."""
        milestone = max((m for m in MILESTONES if (self.percent or 0) >= m), default=0)
        sla = tuple(
            (c, (self.sla.get(c) or {}).get("at_risk_at"), (self.sla.get(c) or {}).get("breached_at"))
            for c in _CLOCKS
        )
        return (self.state, self.initiated_at, self.completed_at, milestone, sla)


@dataclass(frozen=True)
class Event:
    key: str
    type: str
    occurred_at: datetime
    rank: int
    state: str
    extra: dict[str, Any] = field(default_factory=dict)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def restore_events(facts: RestoreFacts, now: datetime) -> list[Event]:
    """Every event the restore has produced by now, in the order they are to be delivered."""
    accepted_state = "awaiting_approval" if facts.approval_required else "requested"
    events = [Event("accepted", "restore.accepted", facts.requested_at, 0, accepted_state)]
    if facts.approval_required:
        events.append(
            Event(
                "awaiting_approval", "restore.awaiting_approval", facts.requested_at, 1, "awaiting_approval"
            )
        )
    if facts.initiated_at is not None:
        events.append(Event("initiated", "restore.initiated", facts.initiated_at, 2, "running"))
    if facts.state == "running" and facts.percent is not None:
        at = facts.progress_at or now
        for index, milestone in enumerate(MILESTONES):
            if facts.percent >= milestone:
                events.append(
                    Event(
                        f"progress:{milestone}",
                        "restore.progress",
                        at,
                        3 + index,
                        "running",
                        {"milestone": milestone},
                    )
                )
    for clock in _CLOCKS:
        recorded = facts.sla.get(clock) or {}
        for kind, rank in (("at_risk", 10), ("breached", 11)):
            instant = recorded.get(f"{kind}_at")
            if isinstance(instant, datetime):
                events.append(
                    Event(
                        f"sla_{kind}:{clock}",
                        f"restore.sla_{kind}",
                        instant,
                        rank,
                        facts.state,
                        {"clock": clock},
                    )
                )
    ended = _ENDED.get(facts.state)
    if ended is not None and facts.completed_at is not None:
        events.append(Event(facts.state, ended, facts.completed_at, 20, facts.state))
    return sorted(events, key=lambda e: (e.occurred_at, e.rank))


def restore_payload(facts: RestoreFacts, event: Event) -> dict[str, Any]:
    """The message body: the Standard Webhooks shape (``type``, ``timestamp``, ``data``)."""
    sla = {
        clock: {
            "status": values.get("status"),
            "deadline_at": _iso(values.get("deadline_at")),
            "at_risk_at": _iso(values.get("at_risk_at")),
            "breached_at": _iso(values.get("breached_at")),
        }
        for clock, values in facts.sla.items()
    }
    data: dict[str, Any] = {
        "restore_id": str(facts.restore_id),
        "ticket_id": facts.ticket_id,
        "tenant_id": str(facts.tenant_id),
        "vm": {"id": str(facts.vm_id), "name": facts.vm_name},
        "type": facts.type,
        "target": facts.target,
        "state": event.state,
        "clocks": {
            "requested_at": _iso(facts.requested_at),
            "initiated_at": _iso(facts.initiated_at),
            "completed_at": _iso(facts.completed_at),
        },
        "sla": sla or None,
        "progress": {"percent": facts.percent} if facts.percent is not None else None,
        "error": facts.error if event.state in ("failed", "cancelled") else None,
        **event.extra,
    }
    return {"type": event.type, "timestamp": _iso(event.occurred_at), "data": data}


def admits(events_filter: list[str], event_type: str) -> bool:
    """An integration's filter: empty admits everything."""
    return not events_filter or event_type in events_filter
