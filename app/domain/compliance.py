"""RPO and restore SLA arithmetic: what is compliant, at risk or breached, and why.

RPO. A protected VM is compliant while the age of its RPO clock is within the policy's RPO.
The clock runs from its *anchor*: the later of its latest restore point and the moment its
current protection began. So a newly protected VM has one RPO to get its first backup (the
schedule must have a chance to run) and is breached, cause "not yet backed up", after that.
It is *at risk* once the age passes 80% of the RPO, *breached* once it passes the RPO.

Restores. Each restore runs two clocks from the moment it was requested: initiation (work
started on a proxy) within 2 h for onsite data or 6 h for offsite data, and completion within
the RTO of the restore point's policy (12 h without one). A clock is at risk from the
instant 80% of its window has elapsed and breached once its deadline has passed; the
instants are computed from the timestamps, never from when someone looked, so every
replica and every re-evaluation gives the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

DEFAULT_RPO_HOURS = 24
DEFAULT_RTO_HOURS = 12
AT_RISK_FRACTION = 0.8
INITIATION_HOURS = {"onsite": 2, "offsite": 6}


# RPO


class RpoStatus(StrEnum):
    COMPLIANT = "compliant"
    AT_RISK = "at_risk"
    BREACHED = "breached"
    #: Not protected now (reported for history: it was protected during the period).
    UNPROTECTED = "unprotected"


class BreachCause(StrEnum):
    FAILED_JOBS = "failed_jobs"
    MISSED_WINDOW = "missed_window"
    NO_PROXY = "no_proxy"
    DATASTORE_SPACE = "datastore_space"
    NOT_YET_BACKED_UP = "not_yet_backed_up"
    #: No evidence of the above: e.g. a schedule that runs less often than the RPO, or a
    #: backup still running past the RPO.
    OTHER = "other"


class BreachResolution(StrEnum):
    """Why an RPO breach interval ended."""

    BACKED_UP = "backed_up"
    UNPROTECTED = "unprotected"
    POLICY_CHANGED = "policy_changed"
    RPO_CHANGED = "rpo_changed"


def rpo_anchor(latest_point_at: datetime | None, protected_since: datetime) -> datetime:
    """Where the VM's RPO clock starts: its latest restore point or the start of its protection."""
    if latest_point_at is None:
        return protected_since
    return max(latest_point_at, protected_since)


def rpo_due(anchor: datetime, rpo_hours: int) -> datetime:
    """The instant the VM falls out of compliance unless a newer restore point appears."""
    return anchor + timedelta(hours=rpo_hours)


def rpo_status(anchor: datetime, rpo_hours: int, now: datetime) -> RpoStatus:
    age = now - anchor
    rpo = timedelta(hours=rpo_hours)
    if age > rpo:
        return RpoStatus.BREACHED
    if age > rpo * AT_RISK_FRACTION:
        return RpoStatus.AT_RISK
    return RpoStatus.COMPLIANT


def clipped_seconds(start: datetime, end: datetime | None, lo: datetime, hi: datetime) -> float:
    """Seconds of ``[start, end)`` (``end`` None: still open, up to ``hi``) inside ``[lo, hi)``."""
    stop = hi if end is None else min(end, hi)
    return max(0.0, (stop - max(start, lo)).total_seconds())


def compliant_percent(protected_s: float, breached_s: float) -> float | None:
    """Share of the protected time that was compliant; None without protected time."""
    if protected_s <= 0:
        return None
    return round(100.0 * max(protected_s - breached_s, 0.0) / protected_s, 3)


@dataclass(frozen=True)
class BreachEvidence:
    """What the catalog says about a VM out of compliance."""

    has_restore_point: bool
    #: The VM's most recent backup job, if any.
    job_state: str | None = None
    job_waiting_reason: str | None = None
    job_error: str | None = None
    #: Whether a proxy serving the VM's host is online now (False when the host is unknown).
    proxy_online: bool = True
    #: Datastores of the VM below 10% free (backups there do not start), by name.
    critical_datastores: tuple[str, ...] = ()


def breach_cause(e: BreachEvidence) -> tuple[BreachCause, str]:
    """The most specific cause the evidence supports, with a sentence for the report.

    The latest backup job speaks first (it says what actually happened), then the standing
    conditions that stop backups (no online proxy, a datastore below 10% free); a VM with no
    restore point and no other explanation is simply not yet backed up.
    """
    waiting = (e.job_waiting_reason or "").strip()
    error = (e.job_error or "").strip()
    if e.job_state in ("queued", "missed") and waiting.lower().startswith("no proxy"):
        return BreachCause.NO_PROXY, f"the latest backup waited: {waiting}"
    if e.job_state == "skipped" and "datastore" in error.lower():
        return BreachCause.DATASTORE_SPACE, f"the latest backup was skipped: {error}"
    if e.job_state in ("failed", "skipped"):
        return BreachCause.FAILED_JOBS, f"the latest backup {e.job_state}: {error or 'no error recorded'}"
    if e.job_state == "missed":
        return BreachCause.MISSED_WINDOW, error or "the latest backup did not start within its window"
    if not e.proxy_online:
        return BreachCause.NO_PROXY, "no online proxy serves the VM's host"
    if e.critical_datastores:
        names = ", ".join(e.critical_datastores)
        return BreachCause.DATASTORE_SPACE, f"datastore(s) {names} below 10% free: backups do not start"
    if not e.has_restore_point:
        return BreachCause.NOT_YET_BACKED_UP, "the VM has no restore point yet"
    if e.job_state in ("queued", "running"):
        return BreachCause.OTHER, f"a backup is {e.job_state} but none succeeded within the RPO"
    return BreachCause.OTHER, "no backup ran within the RPO (does the schedule run often enough?)"


# Restore SLA clocks


class ClockStatus(StrEnum):
    ON_TRACK = "on_track"
    AT_RISK = "at_risk"
    BREACHED = "breached"
    MET = "met"
    #: The restore ended without reaching this clock's goal, before its deadline.
    FAILED = "failed"
    CANCELLED = "cancelled"


#: A clock in one of these states will not change any more.
SETTLED = frozenset({ClockStatus.BREACHED, ClockStatus.MET, ClockStatus.FAILED, ClockStatus.CANCELLED})


@dataclass(frozen=True)
class SlaClock:
    deadline_at: datetime
    status: ClockStatus
    #: When 80% of the window had elapsed, if the clock got that far.
    at_risk_at: datetime | None
    #: The deadline, if the clock ran past it.
    breached_at: datetime | None


def initiation_window(source_location: str) -> timedelta:
    """2 h for onsite data, 6 h for offsite (anything not onsite is treated as offsite)."""
    return timedelta(hours=INITIATION_HOURS.get(source_location, INITIATION_HOURS["offsite"]))


def completion_window(rto_hours: int | None) -> timedelta:
    return timedelta(hours=rto_hours if rto_hours is not None else DEFAULT_RTO_HOURS)


def evaluate_clock(
    started_at: datetime,
    window: timedelta,
    now: datetime,
    stopped_at: datetime | None = None,
    outcome: ClockStatus = ClockStatus.MET,
) -> SlaClock:
    """A clock started at ``started_at``; ``stopped_at`` with ``outcome`` (met, failed,
    cancelled) once it stopped. Past the deadline it is breached whatever the outcome."""
    deadline = started_at + window
    at_risk_from = started_at + window * AT_RISK_FRACTION
    end = stopped_at if stopped_at is not None else now
    at_risk_at = at_risk_from if end >= at_risk_from else None
    breached_at = deadline if end > deadline else None
    if breached_at is not None:
        status = ClockStatus.BREACHED
    elif stopped_at is not None:
        status = outcome
    elif at_risk_at is not None:
        status = ClockStatus.AT_RISK
    else:
        status = ClockStatus.ON_TRACK
    return SlaClock(deadline, status, at_risk_at, breached_at)


@dataclass(frozen=True)
class RestoreClocks:
    initiation: SlaClock
    completion: SlaClock


_ENDED_OUTCOME = {"failed": ClockStatus.FAILED, "cancelled": ClockStatus.CANCELLED}


def restore_clocks(
    *,
    requested_at: datetime,
    initiated_at: datetime | None,
    completed_at: datetime | None,
    state: str,
    source_location: str,
    rto_hours: int | None,
    now: datetime,
) -> RestoreClocks:
    """Both SLA clocks of a restore. Initiation stops when a proxy started work (met), or
    when the restore ended without starting (failed/cancelled); completion stops when the
    restore ended: met if it succeeded."""
    ended = completed_at is not None
    ended_outcome = _ENDED_OUTCOME.get(state, ClockStatus.FAILED)
    if initiated_at is not None:
        initiation = evaluate_clock(
            requested_at, initiation_window(source_location), now, initiated_at, ClockStatus.MET
        )
    else:
        initiation = evaluate_clock(
            requested_at,
            initiation_window(source_location),
            now,
            completed_at if ended else None,
            ended_outcome,
        )
    completion = evaluate_clock(
        requested_at,
        completion_window(rto_hours),
        now,
        completed_at,
        ClockStatus.MET if state == "succeeded" else ended_outcome,
    )
    return RestoreClocks(initiation, completion)
