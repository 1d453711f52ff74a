"""Each attempt of a backup job has a restore point id of its own, derived so that a claim writes
nothing down, and a job assigned by an earlier version keeps the id it was given."""

from __future__ import annotations

import uuid

from app.domain.jobs import JobKind, JobState
from app.jobs.job_params import attempt_point_id
from app.jobs.models import Job


def backup_job(attempt: int, params: dict[str, object] | None = None) -> Job:
    return Job(
        id=uuid.uuid4(),
        kind=JobKind.BACKUP.value,
        state=JobState.RUNNING.value,
        attempt=attempt,
        params=params or {},
    )


def test_the_id_is_stable_for_an_attempt_and_differs_between_attempts_and_jobs() -> None:
    job = backup_job(1)
    first = attempt_point_id(job)
    assert attempt_point_id(job) == first
    job.attempt = 2
    assert attempt_point_id(job) != first
    other = backup_job(1)
    assert attempt_point_id(other) != first


def test_an_id_recorded_by_an_earlier_version_stands_for_its_attempt_only() -> None:
    recorded = uuid.uuid4()
    job = backup_job(3, {"restore_point_id": str(recorded), "restore_point_attempt": 3})
    assert attempt_point_id(job) == recorded
    job.attempt = 4  # the retry after it gets an id of its own
    assert attempt_point_id(job) != recorded
