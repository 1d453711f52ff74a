"""The alert loop: evaluates every condition and opens, revises or closes alerts to match.

Idempotent and safe on several replicas: an alert is one open row per key (a partial unique
index; inserts skip conflicts), closes are compare-and-set, and each change is announced in the
transaction that makes it, so that it is announced once. The verify alert is not evaluated here:
``vmrecovery repository verify`` records it (see :meth:`AlertService.record_verify`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.alerts import conditions
from app.alerts.repository import ConditionRepository
from app.alerts.schemas import AlertKind, Condition
from app.alerts.service import AlertService
from app.clock import Clock
from app.domain.jobs import JobKind, JobTrigger
from app.jobs.repository import queued_job_row
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)

#: Job history read for evidence (backup outcomes, snapshots left); older alerts are kept open
#: until evidence clears them (see app.alerts.conditions).
HORIZON = timedelta(days=30)
EVALUATED = [
    AlertKind.BACKUP_FAILED,
    AlertKind.RPO_BREACH,
    AlertKind.PROXY_OFFLINE,
    AlertKind.DATASTORE_LOW,
    AlertKind.SNAPSHOT_LEFT,
]
CLEANUP_ATTEMPTS = 5


@dataclass
class AlertReport:
    opened: int = 0
    closed: int = 0
    revised: int = 0
    open: int = 0
    cleanups_queued: int = 0


class AlertLoop(LoopService):
    name = "alerts"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        proxy_stale_after_s: float = 90.0,
        proxy_offline_after_s: float = 300.0,
        interval_s: float = 60.0,
    ) -> None:
        super().__init__(interval_s)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.stale_after = timedelta(seconds=proxy_stale_after_s)
        self.offline_after = timedelta(seconds=proxy_offline_after_s)
        self.last_report = AlertReport()

    async def run_once(self) -> None:
        now = self.clock.now()
        async with self.sessionmaker.begin() as session:
            report = await self.evaluate(session, now)
        self.last_report = report
        if report.opened or report.closed or report.cleanups_queued:
            log.info(
                "alerts: %d opened, %d closed, %d open; %d snapshot clean-ups queued",
                report.opened,
                report.closed,
                report.open,
                report.cleanups_queued,
            )

    async def evaluate(self, session: AsyncSession, now: datetime) -> AlertReport:
        reader = ConditionRepository(session)
        service = AlertService(session)
        open_alerts = await service.repo.open_alerts([k.value for k in EVALUATED])
        by_kind = {kind: [a for a in open_alerts if a.kind == kind.value] for kind in EVALUATED}
        since = now - HORIZON

        outcomes = await reader.latest_backup_outcomes(since)
        evidence = await reader.snapshot_evidence(since)
        vm_ids = [o.vm_id for o in outcomes] + [e.vm_id for e in evidence]
        vm_ids += [vm for a in open_alerts if a.subject_type == "vm" and (vm := conditions.vm_of(a))]
        vms = await reader.vms(vm_ids)

        wanted: dict[str, Condition] = {}
        wanted |= conditions.failed_backups(outcomes, vms, by_kind[AlertKind.BACKUP_FAILED])
        wanted |= conditions.rpo_breaches(await reader.open_breaches())
        wanted |= conditions.offline_proxies(
            await reader.proxies(), now, self.stale_after, self.offline_after
        )
        wanted |= conditions.low_datastores(await reader.low_datastores())
        pending = await reader.vms_with_cleanup_pending(list({e.vm_id for e in evidence}))
        snapshots, requests = conditions.snapshots_left(
            evidence, vms, by_kind[AlertKind.SNAPSHOT_LEFT], pending, now
        )
        wanted |= snapshots

        done = await service.reconcile(EVALUATED, wanted, now)
        queued = await reader.queue_cleanups([self._cleanup_row(r, now) for r in requests])
        return AlertReport(done.opened, done.closed, done.revised, len(wanted), queued)

    @staticmethod
    def _cleanup_row(request: conditions.CleanupRequest, now: datetime) -> dict[str, Any]:
        return queued_job_row(
            JobKind.SNAPSHOT_CLEANUP,
            JobTrigger.CLEANUP,
            request.tenant_id,
            request.vm_id,
            now,
            CLEANUP_ATTEMPTS,
            policy_id=request.policy_id,
            scheduled_for=request.slot,
            params={"snapshot_name": request.snapshot_name, "for_job_id": request.for_job_id},
        )
