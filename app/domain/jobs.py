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
    BACKUP = "backup"  # image backup of a whole VM (proxy)
    RESTORE = "restore"  # full-VM restore (proxy)
    SNAPSHOT_CLEANUP = "snapshot_cleanup"  # remove a snapshot a lost proxy left (proxy)
    FILE_RESTORE = "file_restore"  # files out of an image restore point, as an archive or into the VM (proxy)
    APP_BACKUP = "app_backup"  # databases and file sets dumped inside the VM (guest agent)
    APP_RESTORE = "app_restore"  # a database or file set back into the VM (guest agent)
    QUIESCE = "quiesce"  # hold applications still while a proxy takes the VM's snapshot (guest agent)
    OFFSITE_COPY = "offsite_copy"  # copy a restore point's missing chunks to the offsite repository (proxy)


class AgentKind(StrEnum):
    """Who pulls work: a proxy (serves ESXi hosts, reads disks) or a guest agent (inside one VM)."""

    PROXY = "proxy"
    GUEST = "guest"


#: The jobs a guest agent runs, on its own VM only; proxies never see them, and guest agents see nothing else.
GUEST_JOB_KINDS = frozenset({JobKind.APP_BACKUP, JobKind.APP_RESTORE, JobKind.QUIESCE})
PROXY_JOB_KINDS = frozenset(JobKind) - GUEST_JOB_KINDS
#: Jobs that carry out a customer's restore request (their state is mirrored on the restore).
RESTORE_JOB_KINDS = frozenset({JobKind.RESTORE, JobKind.FILE_RESTORE, JobKind.APP_RESTORE})


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
    COPY = "copy"  # an offsite copy following a successful backup
    QUIESCE = "quiesce"  # asked for by the proxy running an application-aware backup


TERMINAL = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.SKIPPED, JobState.CANCELLED, JobState.MISSED}
)

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED, JobState.MISSED}),
    # running → running: a change within the attempt (a cancel request), compare-and-set like the rest.
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
#: A quiesce goes first of all: a proxy holds a snapshot request open until the guest is frozen.
PRIORITY = {
    JobKind.QUIESCE: 0,
    JobKind.RESTORE: 1,
    JobKind.FILE_RESTORE: 1,
    JobKind.APP_RESTORE: 1,
    JobKind.SNAPSHOT_CLEANUP: 5,
    JobKind.BACKUP: 10,
    JobKind.APP_BACKUP: 10,
    JobKind.OFFSITE_COPY: 20,  # after the night's backups: they keep the RPO, copies follow
}


def can_transition(current: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[current]


class RestoreState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"  # over an existing VM: an operator must approve first
    REQUESTED = "requested"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A restore in one of these holds its restore point and its VM (not finished).
ACTIVE_RESTORE_STATES = (
    RestoreState.AWAITING_APPROVAL.value,
    RestoreState.REQUESTED.value,
    RestoreState.RUNNING.value,
)

JOB_TO_RESTORE_STATE = {
    JobState.QUEUED: RestoreState.REQUESTED,
    JobState.RUNNING: RestoreState.RUNNING,
    JobState.SUCCEEDED: RestoreState.SUCCEEDED,
    JobState.FAILED: RestoreState.FAILED,
    JobState.SKIPPED: RestoreState.FAILED,
    JobState.CANCELLED: RestoreState.CANCELLED,
    JobState.MISSED: RestoreState.FAILED,
}
