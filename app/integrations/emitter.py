"""The loop that turns restores' state changes into outbound messages (the outbox's writer).

Each tick reads the restores its integrations follow (active ones, and those that ended within
``follow_ended``), derives every event each has produced so far (:mod:`app.integrations.events`)
and enqueues those without a message yet. That is idempotent, so replicas and restarts need no
coordination: the unique (integration, subject, event key) decides. A restore whose state, clocks,
progress milestone and integrations are what they were at the previous tick is skipped without
reading its messages, which keeps a tick to one read of the followed restores.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.compliance.clocks import clocks_of
from app.integrations.events import ACTIVE_STATES, RestoreFacts, admits, restore_events, restore_payload
from app.integrations.models import Integration
from app.integrations.outbox import Message, enqueue, restore_subject
from app.integrations.repository import DeliveryRepository, IntegrationRepository
from app.jobs.models import Job
from app.jobs.progress import job_progress
from app.restores.models import Restore
from app.restores.repository import RestoreRepository
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)


def _sla(restore: Restore, rto_hours: int | None, now: datetime) -> dict[str, dict[str, Any]]:
    """Both clocks as of ``now``, computed here rather than read from the recorder's rows (which
    lag by up to its interval): an at-risk or breached instant is queued at the first tick past
    it, so it never follows a later event of the restore in the delivery order."""
    clocks = clocks_of(restore, rto_hours, now)
    return {
        name: {
            "status": clock.status.value,
            "deadline_at": clock.deadline_at,
            "at_risk_at": clock.at_risk_at,
            "breached_at": clock.breached_at,
        }
        for name, clock in (("initiation", clocks.initiation), ("completion", clocks.completion))
    }


def restore_facts(
    restore: Restore, vm_name: str, rto_hours: int | None, job: Job | None, now: datetime
) -> RestoreFacts:
    return RestoreFacts(
        restore_id=restore.id,
        tenant_id=restore.tenant_id,
        vm_id=restore.vm_id,
        vm_name=vm_name,
        type=restore.type,
        target=restore.target,
        state=restore.state,
        approval_required=restore.approval_required,
        requested_at=restore.requested_at,
        initiated_at=restore.initiated_at,
        completed_at=restore.completed_at,
        error=restore.error,
        integration_id=restore.integration_id,
        ticket_id=restore.ticket_id,
        percent=job_progress(job, now).percent if job is not None else None,
        progress_at=job.progress_at if job is not None else None,
        sla=_sla(restore, rto_hours, now),
    )


def _follows(integration: Integration, restore: Restore) -> bool:
    """An integration follows the restores it asked for, and those requested since it exists."""
    return restore.integration_id == integration.id or restore.requested_at >= integration.created_at


class EventEmitterLoop(LoopService):
    name = "webhook-emitter"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        interval_s: float = 5.0,
        follow_ended: timedelta = timedelta(days=1),
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.follow_ended = follow_ended
        self.last_emitted = 0
        self._seen: dict[uuid.UUID, tuple[Any, ...]] = {}

    async def run_once(self) -> None:
        now = self.clock.now()
        async with self.sessionmaker.begin() as session:
            written, seen = await self.emit(session, now)
        # Only once committed: a rolled-back tick must look at its restores again.
        self._seen = seen
        self.last_emitted = written
        if written:
            log.info("webhooks: %d restore events queued", written)

    async def emit(
        self, session: AsyncSession, now: datetime
    ) -> tuple[int, dict[uuid.UUID, tuple[Any, ...]]]:
        integrations = await IntegrationRepository(session).sending(operators=False)
        if not integrations:
            return 0, {}
        by_tenant: dict[uuid.UUID, list[Integration]] = defaultdict(list)
        for integration in integrations:
            assert integration.tenant_id is not None
            by_tenant[integration.tenant_id].append(integration)
        rows = await IntegrationRepository(session).restores_to_follow(
            list(by_tenant), ACTIVE_STATES, now - self.follow_ended
        )
        jobs = await RestoreRepository(session).jobs_for([r.id for r, _, _ in rows])
        seen: dict[uuid.UUID, tuple[Any, ...]] = {}
        todo: list[tuple[RestoreFacts, list[Integration]]] = []
        for restore, vm_name, rto_hours in rows:
            targets = [i for i in by_tenant[restore.tenant_id] if _follows(i, restore)]
            if not targets:
                continue
            facts = restore_facts(restore, vm_name, rto_hours, jobs.get(restore.id), now)
            fingerprint = (facts.fingerprint(), tuple((i.id, tuple(i.events)) for i in targets))
            seen[restore.id] = fingerprint
            if self._seen.get(restore.id) != fingerprint:
                todo.append((facts, targets))
        if not todo:
            return 0, seen
        deliveries = DeliveryRepository(session)
        emitted = await deliveries.emitted(
            list({i.id for _, targets in todo for i in targets}),
            [restore_subject(facts.restore_id) for facts, _ in todo],
        )
        written = 0
        for facts, targets in todo:
            subject = restore_subject(facts.restore_id)
            events = restore_events(facts, now)
            for integration in targets:
                have = emitted.get((integration.id, subject))
                missing = [
                    Message(e.key, e.type, restore_payload(facts, e))
                    for e in events
                    if admits(integration.events, e.type) and (have is None or e.key not in have.keys)
                ]
                if not missing:
                    continue
                count = await enqueue(
                    deliveries, now, integration.id, subject, missing, have.last_sequence if have else 0
                )
                written += count
                if count < len(missing):
                    seen.pop(facts.restore_id, None)  # a racing emitter wrote first: look again next tick
        return written, seen
