"""A restore follows the state of the job that carries it out."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.jobs import JOB_TO_RESTORE_STATE, JobState
from app.jobs.models import Job
from app.restores.repository import RestoreRepository

_ENDED = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.SKIPPED, JobState.CANCELLED, JobState.MISSED}
)


async def sync_restore(session: AsyncSession, job: Job, result: dict[str, Any] | None = None) -> None:
    """Give ``job``'s restore (if it carries one) the state its job has now.

    Every path that moves a restore's job must call this: the agent's report, a job that cannot
    run, the reaper, an operator's cancel. A restore left ``requested`` after its job ended would
    keep its SLA clocks running, its events stream open, and its VM refusing new restores.
    """
    if job.restore_id is None:
        return
    restore = await RestoreRepository(session).get(job.restore_id)
    if restore is None:
        return
    state = JobState(job.state)
    restore.state = JOB_TO_RESTORE_STATE[state].value
    if state in _ENDED:
        restore.completed_at = job.finished_at
        restore.error = job.error
        if result is not None:
            restore.result = result
        # Guest credentials of a file restore are needed only while it runs.
        restore.secrets_encrypted = None
