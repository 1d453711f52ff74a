"""The job state machine: one table of allowed transitions, applied with compare-and-set.

``queued`` jobs wait for a proxy; a claim makes them ``running`` under a lease that progress
reports extend. A job ends ``succeeded``, ``failed``, ``skipped`` (it could not start, e.g. the
datastore is too full: a failure for the customer, but not a crash) or ``cancelled``. A
running job whose lease lapsed goes back to ``queued`` to be retried (or ``failed`` when out
of attempts).
"""

from __future__ import annotations

from enum import StrEnum


class JobKind(StrEnum):
    BACKUP = "backup"
    RESTORE = "restore"
    SNAPSHOT_CLEANUP = "snapshot_cleanup"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    MISSED = "missed"


class JobTrigger(StrEnum):
    MANUAL = "manual"
    SCHEDULED = "scheduled"
    CATCH_UP = "catch-up"
    RESTORE = "restore"
    CLEANUP = "cleanup"


TERMINAL = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.SKIPPED, JobState.CANCELLED, JobState.MISSED}
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED, JobState.MISSED}),
    # running → running is a re-claim: the lease lapsed and another claim takes the job over.
    JobState.RUNNING: frozenset(
        {
            JobState.RUNNING,
            JobState.SUCCEEDED,
            JobState.FAILED,
            JobState.SKIPPED,
            JobState.CANCELLED,
            JobState.QUEUED,
        }
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.SKIPPED: frozenset(),
    JobState.CANCELLED: frozenset(),
    JobState.MISSED: frozenset(),
}

#: Lower runs first: restores go before backups (a customer is waiting for them).
PRIORITY = {JobKind.RESTORE: 0, JobKind.SNAPSHOT_CLEANUP: 5, JobKind.BACKUP: 10}


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


class RestoreState(StrEnum):
    REQUESTED = "requested"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


JOB_TO_RESTORE_STATE = {
    JobState.QUEUED: RestoreState.REQUESTED,
    JobState.RUNNING: RestoreState.RUNNING,
    JobState.SUCCEEDED: RestoreState.SUCCEEDED,
    JobState.FAILED: RestoreState.FAILED,
    JobState.SKIPPED: RestoreState.FAILED,
    JobState.CANCELLED: RestoreState.CANCELLED,
    JobState.MISSED: RestoreState.FAILED,
}
