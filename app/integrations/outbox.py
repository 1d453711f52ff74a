"""The outbox: outbound messages are rows of ``webhook_deliveries``, written in the transaction that
decides them and sent later by the delivery loop, so that nothing decided is lost to a crash.

Each message gets the next ``sequence`` of its (integration, subject). Inserts skip conflicts on
both unique keys, one message at a time, and stop at the first one skipped: that means another
emitter (a replica) wrote in between, and the rest are emitted again on the next tick, after
its messages, so a subject's numbers always follow the order the events happened in.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.integrations.events import admits
from app.integrations.repository import DeliveryRepository, IntegrationRepository

#: Messages are retried for a day after they were emitted (or resent).
RETRY_FOR = timedelta(days=1)


@dataclass(frozen=True)
class Message:
    event_key: str
    event_type: str
    payload: dict[str, Any]


def restore_subject(restore_id: uuid.UUID) -> str:
    return f"restore:{restore_id}"


def alert_subject(alert_id: uuid.UUID | str) -> str:
    return f"alert:{alert_id}"


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


async def enqueue(
    repo: DeliveryRepository,
    now: datetime,
    integration_id: uuid.UUID,
    subject: str,
    messages: list[Message],
    last_sequence: int,
) -> int:
    """Append messages to a subject after ``last_sequence``; returns how many were written."""
    written = 0
    for sequence, message in enumerate(messages, start=last_sequence + 1):
        row = {
            "id": uuid.uuid4(),
            "integration_id": integration_id,
            "subject": subject,
            "sequence": sequence,
            "event_key": message.event_key,
            "event_type": message.event_type,
            "message_id": new_message_id(),
            "payload": message.payload,
            "state": "pending",
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
            "expires_at": now + RETRY_FOR,
            "leased_until": None,
            "last_attempt_at": None,
            "last_status": None,
            "last_error": None,
            "delivered_at": None,
        }
        if not await repo.insert(row):
            break
        written += 1
    return written


async def emit_alert_event(
    session: AsyncSession,
    now: datetime,
    *,
    alert_id: uuid.UUID | str,
    event_type: str,
    data: dict[str, Any],
    occurred_at: datetime | None = None,
    event_key: str | None = None,
) -> int:
    """Queue an alert's change (``alert.opened``, ``alert.severity_changed``, ``alert.closed``)
    for every enabled operators' integration with a URL whose filter admits it; returns the
    number of messages queued.

    Call it in the transaction that changes the alert: the message is then sent if and only if
    the change is committed. Calling it again for the same alert and ``event_key`` (by default
    the event type: one opening, one closing per alert) does nothing, so a re-evaluated
    condition is never sent twice. ``data`` must be JSON-serialisable (ids and times as strings).
    """
    integrations = [
        i
        for i in await IntegrationRepository(session).sending(operators=True)
        if admits(i.events, event_type)
    ]
    if not integrations:
        return 0
    repo = DeliveryRepository(session)
    subject = alert_subject(alert_id)
    emitted = await repo.emitted([i.id for i in integrations], [subject])
    at = (occurred_at or now).isoformat().replace("+00:00", "Z")
    key = event_key or event_type
    message = Message(key, event_type, {"type": event_type, "timestamp": at, "data": data})
    written = 0
    for integration in integrations:
        already = emitted.get((integration.id, subject))
        if already is not None and key in already.keys:
            continue
        written += await enqueue(
            repo, now, integration.id, subject, [message], already.last_sequence if already else 0
        )
    return written
