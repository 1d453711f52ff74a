"""The server side of the agent channel: claims under a lease, progress, completion.

Every state change is a compare-and-set through :class:`JobRepository`; a proxy that lost its
lease (the job was re-claimed elsewhere) is told so with a 409 and must stop.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.clock import Clock
from app.contracts.agent import (
    CleanupTarget,
    CleanupTargets,
    CompleteRequest,
    JobAssignment,
    ProgressAck,
    ProgressReport,
    RepositoryAccess,
)
from app.crypto import SecretBox
from app.db.dialect import serialize_claims
from app.domain.jobs import JOB_TO_RESTORE_STATE, AgentKind, JobKind, JobState
from app.errors import Conflict, NotFound
from app.inventory.repository import InventoryRepository
from app.jobs.agent_scope import agent_may_know
from app.jobs.job_params import GUEST_FREEZE_TIMEOUT_S, AssignmentBuilder, JobNotRunnable, snapshot_prefix
from app.jobs.job_results import JobResults, follow_job, result_of
from app.jobs.models import Job
from app.jobs.repository import ClaimCandidate, JobRepository, Saturation, VmHolds
from app.proxies.models import Proxy
from app.restore_points.repository import RestorePointRepository
from app.restores.repository import RestoreRepository
from app.vcenters.repository import VCenterRepository

log = logging.getLogger(__name__)

RETRY_BACKOFF = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1))


@dataclass(frozen=True)
class Limits:
    """How many backups may run at once: per ESXi host, per datastore, in the service."""

    per_host: int = 2
    per_datastore: int = 2
    total: int = 100


#: How many more windows of candidates a claim reads past one that the limits refused whole.
MORE_CANDIDATE_PAGES = 3


class Usage:
    """Running backups counted by host and datastore, as a claim hands out more."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.total = 0
        self.hosts: Counter[uuid.UUID] = Counter()
        self.datastores: Counter[uuid.UUID] = Counter()
        # A backup's snapshot of a VM whose disks a restore is overwriting would hold half old,
        # half new data (and be labelled consistent: the VM is off); a restore over a VM under
        # a backup's snapshot, or a lost proxy's snapshot not yet cleaned up, would fail.
        self.backed_up: set[uuid.UUID] = set()
        self.overwritten: set[uuid.UUID] = set()
        self.cleaning: set[uuid.UUID] = set()

    def hold(self, holds: VmHolds) -> None:
        self.overwritten |= holds.overwritten
        self.cleaning |= holds.cleaning

    def admits(self, host_id: uuid.UUID | None, datastore_ids: set[uuid.UUID]) -> bool:
        if self.total >= self.limits.total:
            return False
        if host_id is not None and self.hosts[host_id] >= self.limits.per_host:
            return False
        return all(self.datastores[d] < self.limits.per_datastore for d in datastore_ids)

    def add(self, host_id: uuid.UUID | None, datastore_ids: set[uuid.UUID]) -> None:
        self.total += 1
        if host_id is not None:
            self.hosts[host_id] += 1
        for datastore_id in datastore_ids:
            self.datastores[datastore_id] += 1

    def full(self) -> Saturation:
        """What admits no further backup now: the service, and which hosts and datastores."""
        return Saturation(
            everything=self.total >= self.limits.total,
            hosts={h for h, n in self.hosts.items() if n >= self.limits.per_host},
            datastores={d for d, n in self.datastores.items() if n >= self.limits.per_datastore},
        )


def _held_vms(candidates: list[ClaimCandidate]) -> set[uuid.UUID]:
    """The candidates' VMs whose jobs another job on the VM can hold back: backups and restores
    over the VM."""
    return {j.vm_id for j in candidates if j.kind == JobKind.BACKUP.value or j.overwrites_vm}


class AgentChannel:
    def __init__(
        self,
        session: AsyncSession,
        clock: Clock,
        box: SecretBox,
        lease_s: float,
        repository: RepositoryAccess,
        limits: Limits | None = None,
        freeze_timeout_s: float = GUEST_FREEZE_TIMEOUT_S,
        offsite: RepositoryAccess | None = None,
    ) -> None:
        self.session = session
        self.jobs = JobRepository(session)
        self.inventory = InventoryRepository(session)
        self.vcenters = VCenterRepository(session)
        self.points = RestorePointRepository(session)
        self.restores = RestoreRepository(session)
        self.clock = clock
        self.box = box
        self.lease = timedelta(seconds=lease_s)
        self.repository = repository
        self.limits = limits or Limits()
        self.builder = AssignmentBuilder(session, box, lease_s, repository, freeze_timeout_s, offsite)
        self.results = JobResults(session, offsite=offsite is not None)

    async def claim(self, proxy: Proxy, capacity: int) -> list[JobAssignment]:
        """Reserve and assign in one transaction (tests and tools; the API commits in between)."""
        return await self.assign(proxy, await self.reserve(proxy, capacity))

    async def reserve(self, proxy: Proxy, capacity: int) -> list[uuid.UUID]:
        """Phase one of a claim: choose jobs within the concurrency limits and move them to running.

        This is the only part that runs under the claim lock (limits are exact only if claims take
        turns), so it is a handful of statements: free slots, candidates, current usage, one
        compare-and-set update. The caller commits right after, which releases the lock; building
        the assignments (credentials, previous points) happens in :meth:`assign`, outside it.
        """
        now = self.clock.now()
        if not await self.jobs.any_claimable(proxy, now):
            return []
        if proxy.kind == AgentKind.GUEST.value:
            return await self._reserve_for_guest(proxy, capacity, now)
        await serialize_claims(self.session)
        own, running_backups = await self.jobs.running_load(proxy.id)
        free = min(capacity, proxy.max_concurrent_jobs - own)
        if free <= 0:
            return []
        window = free * 4 + 16
        candidates = await self.jobs.claimable(proxy, now, window)
        if not candidates:
            return []
        # One look-up places the running backups (what the limits count) and the candidates.
        placement = await self.jobs.placement(
            [*running_backups, *(j.vm_id for j in candidates if j.kind == JobKind.BACKUP.value)]
        )
        usage = Usage(self.limits)
        usage.backed_up.update(running_backups)
        usage.hold(await self.jobs.vm_holds(_held_vms(candidates)))
        for vm_id in dict.fromkeys(running_backups):
            if vm_id in placement:
                usage.add(*placement[vm_id])
        chosen: list[ClaimCandidate] = []
        skipped = self._admit(candidates, placement, usage, chosen, free)
        seen = [j.id for j in candidates]
        # The window was full of backups the limits refuse (one busy host's queue, say): look
        # past it, leaving out what is saturated, or the other hosts' jobs would wait behind
        # that queue until their windows end.
        for _ in range(MORE_CANDIDATE_PAGES):
            if len(chosen) >= free or not skipped or len(candidates) < window:
                break
            candidates = await self.jobs.claimable_beyond(proxy, now, window, seen, usage.full())
            seen += [j.id for j in candidates]
            placement |= await self.jobs.placement(
                [j.vm_id for j in candidates if j.kind == JobKind.BACKUP.value and j.vm_id not in placement]
            )
            usage.hold(await self.jobs.vm_holds(_held_vms(candidates)))
            skipped = self._admit(candidates, placement, usage, chosen, free)
        started = set(await self.jobs.start_claimed([j.id for j in chosen], proxy.id, now, now + self.lease))
        await self.restores.mark_initiated(
            [j.restore_id for j in chosen if j.id in started and j.restore_id is not None],
            JOB_TO_RESTORE_STATE[JobState.RUNNING].value,
            now,
        )
        return [j.id for j in chosen if j.id in started]

    @staticmethod
    def _admit(
        candidates: list[ClaimCandidate],
        placement: dict[uuid.UUID, tuple[uuid.UUID | None, set[uuid.UUID]]],
        usage: Usage,
        chosen: list[ClaimCandidate],
        free: int,
    ) -> int:
        """Add to ``chosen``, in order, the candidates the limits admit; return how many they refused."""
        refused = 0
        for job in candidates:
            if len(chosen) >= free:
                break
            if job.kind == JobKind.BACKUP.value:
                if job.vm_id in usage.overwritten:
                    refused += 1
                    continue
                where = placement.get(job.vm_id)
                if where is not None:
                    if not usage.admits(*where):
                        refused += 1
                        continue
                    usage.add(*where)
                usage.backed_up.add(job.vm_id)
            elif job.overwrites_vm:
                if job.vm_id in usage.backed_up or job.vm_id in usage.cleaning:
                    refused += 1
                    continue
                usage.overwritten.add(job.vm_id)
            chosen.append(job)
        return refused

    async def _reserve_for_guest(self, agent: Proxy, capacity: int, now: datetime) -> list[uuid.UUID]:
        """A guest agent takes its own VM's jobs: no shared limits, so no claim lock (rows are still
        locked, skip locked, so two claims of one agent never take the same job)."""
        free = min(capacity, agent.max_concurrent_jobs - await self.jobs.running_for_proxy(agent.id))
        if free <= 0:
            return []
        candidates = await self.jobs.claimable(agent, now, free)
        started = await self.jobs.start_claimed([j.id for j in candidates], agent.id, now, now + self.lease)
        await self.restores.mark_initiated(
            [j.restore_id for j in candidates if j.id in started and j.restore_id is not None],
            JOB_TO_RESTORE_STATE[JobState.RUNNING].value,
            now,
        )
        return started

    async def assign(self, proxy: Proxy, job_ids: list[uuid.UUID]) -> list[JobAssignment]:
        """Phase two: what the proxy needs to run each reserved job (no claim lock held)."""
        assignments: list[JobAssignment] = []
        for job in await self.jobs.get_many(job_ids):
            if job.state != JobState.RUNNING.value or job.proxy_id != proxy.id:
                continue  # cancelled or reaped in between: not this proxy's any more
            assignment = await self._assignment(job, proxy)
            if assignment is not None:
                assignments.append(assignment)
        await self.session.flush()
        return assignments

    async def _assignment(self, job: Job, proxy: Proxy) -> JobAssignment | None:
        try:
            return await self.builder.build(job, proxy, self.clock.now())
        except JobNotRunnable as exc:
            await self.jobs.transition(
                job, JobState.FAILED, finished_at=self.clock.now(), error=str(exc), error_kind="permanent"
            )
            # A restore must not stay "requested" with its clocks running, nor a copied point
            # "copying" with no job behind it.
            await follow_job(self.session, job)
            return None

    async def _owned_running(self, proxy: Proxy, job_id: uuid.UUID, attempt: int | None = None) -> Job:
        """The job, if it runs on ``proxy`` (in ``attempt``, when the agent names it)."""
        job = await self.jobs.get(job_id)
        if job is None or not agent_may_know(proxy, job):
            raise NotFound(f"Job {job_id} does not exist.")
        if job.proxy_id != proxy.id or job.state != JobState.RUNNING.value:
            raise Conflict(
                f"Job {job_id} is not running on this proxy any more (lease lost or job ended); stop it."
            )
        if attempt is not None and attempt != job.attempt:
            # The lease lapsed and the same proxy claimed the job again: the old attempt's worker
            # must neither extend the new attempt's lease nor end it.
            raise Conflict(
                f"Attempt {attempt} of job {job_id} was superseded by attempt {job.attempt}; stop it."
            )
        return job

    async def progress(
        self, proxy: Proxy, job_id: uuid.UUID, report: ProgressReport, attempt: int | None = None
    ) -> ProgressAck:
        job = await self._owned_running(proxy, job_id, attempt)
        now = self.clock.now()
        lease = now + self.lease
        values: dict[str, object] = {
            "phase": report.phase,
            "bytes_total": report.bytes_total,
            "bytes_read": report.bytes_read,
            "bytes_new": report.bytes_new,
            "bytes_stored": report.bytes_stored,
            "progress_at": now,
            "lease_expires_at": lease,
        }
        if report.warnings:
            values["warnings"] = list(dict.fromkeys([*(job.warnings or []), *report.warnings]))
        if not await self.jobs.update_progress(job.id, proxy.id, job.attempt, **values):
            raise Conflict(f"Job {job_id} is not running on this proxy any more; stop it.")
        return ProgressAck(
            lease_expires_at=lease,
            cancel_requested=job.cancel_requested,
            release_requested=bool(job.params.get("release")),
        )

    async def complete(
        self, proxy: Proxy, job_id: uuid.UUID, request: CompleteRequest, attempt: int | None = None
    ) -> Job:
        job = await self._owned_running(proxy, job_id, attempt)
        now = self.clock.now()
        warnings = list(dict.fromkeys([*(job.warnings or []), *request.warnings]))
        final: dict[str, Any] = {}
        if request.progress is not None:
            final = request.progress.model_dump(
                include={"bytes_total", "bytes_read", "bytes_new", "bytes_stored"}
            )
        outcome = JobState(request.outcome)
        if outcome is JobState.SUCCEEDED:
            await self._record_success(job, request, now)
        retry = (
            outcome is JobState.FAILED
            and request.error_kind == "transient"
            and job.attempt < job.max_attempts
            and not job.cancel_requested
        )
        if retry:
            delay = RETRY_BACKOFF[min(job.attempt - 1, len(RETRY_BACKOFF) - 1)]
            won = await self.jobs.transition(
                job,
                JobState.QUEUED,
                expect_proxy=proxy.id,
                not_before=now + delay,
                proxy_id=None,
                lease_expires_at=None,
                error=request.error,
                error_kind=request.error_kind,
                warnings=warnings,
                phase="waiting to retry",
            )
        else:
            won = await self.jobs.transition(
                job,
                outcome,
                expect_proxy=proxy.id,
                finished_at=now,
                lease_expires_at=None,
                error=request.error,
                error_kind=request.error_kind,
                warnings=warnings,
                phase="done",
                result=result_of(request),
                **final,
            )
        if not won:
            raise Conflict(
                f"Job {job_id} changed while completing (lease lost); the result was not recorded."
            )
        await follow_job(self.session, job, result_of(request))
        log.info("job %s (%s) ended %s on proxy %s", job.id, job.kind, job.state, proxy.name)
        return job

    async def _record_success(self, job: Job, request: CompleteRequest, now: datetime) -> None:
        await self.results.record_success(job, request, now)

    async def cleanup_targets(self, proxy: Proxy) -> CleanupTargets:
        """The vCenters of the hosts this proxy serves, for removing snapshots it left behind."""
        vcenter_ids = await self.inventory.vcenter_ids_for_proxy(proxy.id, proxy.serves_all_hosts)
        targets = []
        for vcenter_id in vcenter_ids:
            vcenter = await self.vcenters.get(vcenter_id, None)
            if vcenter is not None:
                targets.append(
                    CleanupTarget(
                        vcenter=self.builder.vcenter_access(vcenter),
                        snapshot_prefix=snapshot_prefix(proxy.id),
                    )
                )
        return CleanupTargets(targets=targets)
