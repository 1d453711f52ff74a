"""Progress figures a user wants (percent, throughput, ETA) from what the proxy reports."""

from __future__ import annotations

from datetime import datetime

from app.jobs.models import Job
from app.jobs.schemas import JobProgress, JobRead


def job_progress(job: Job, now: datetime) -> JobProgress:
    percent = throughput = eta = None
    if job.bytes_total > 0:
        percent = round(min(100.0, 100.0 * job.bytes_read / job.bytes_total), 1)
    if job.started_at is not None and job.bytes_read > 0:
        end = job.finished_at or job.progress_at or now
        elapsed = (end - job.started_at).total_seconds()
        if elapsed > 0:
            throughput = job.bytes_read / elapsed
            if job.state == "running" and job.bytes_total > job.bytes_read:
                eta = (job.bytes_total - job.bytes_read) / throughput
    return JobProgress(
        phase=job.phase,
        bytes_total=job.bytes_total,
        bytes_read=job.bytes_read,
        bytes_new=job.bytes_new,
        bytes_stored=job.bytes_stored,
        percent=percent,
        throughput_bytes_per_s=throughput,
        eta_s=eta,
    )


def job_read(job: Job, now: datetime) -> JobRead:
    return JobRead(
        id=job.id,
        kind=job.kind,
        state=job.state,
        trigger=job.trigger,
        tenant_id=job.tenant_id,
        vm_id=job.vm_id,
        policy_id=job.policy_id,
        restore_id=job.restore_id,
        proxy_id=job.proxy_id,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        lease_expires_at=job.lease_expires_at,
        cancel_requested=job.cancel_requested,
        progress=job_progress(job, now),
        warnings=list(job.warnings or []),
        error=job.error,
        error_kind=job.error_kind,
        result=dict(job.result or {}),
        waiting_reason=job.waiting_reason if job.state == "queued" else None,
    )
