"""RPO and restore SLA arithmetic (pure functions, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.domain.compliance import (
    BreachCause,
    BreachEvidence,
    ClockStatus,
    RpoStatus,
    breach_cause,
    clipped_seconds,
    compliant_percent,
    evaluate_clock,
    restore_clocks,
    rpo_anchor,
    rpo_due,
    rpo_status,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def test_rpo_clock_starts_at_the_later_of_latest_point_and_protection() -> None:
    assert rpo_anchor(None, T0) == T0  # never backed up: one RPO of grace from protection
    assert rpo_anchor(T0 + H, T0) == T0 + H
    assert rpo_anchor(T0 - 48 * H, T0) == T0  # re-protected: old points do not count against it
    assert rpo_due(T0, 24) == T0 + 24 * H


@pytest.mark.parametrize(
    ("age", "status"),
    [
        (timedelta(0), RpoStatus.COMPLIANT),
        (19.2 * H, RpoStatus.COMPLIANT),  # exactly 80%: not yet above it
        (19.2 * H + timedelta(seconds=1), RpoStatus.AT_RISK),
        (24 * H, RpoStatus.AT_RISK),  # exactly the RPO: still within it
        (24 * H + timedelta(seconds=1), RpoStatus.BREACHED),
    ],
)
def test_rpo_status_thresholds(age: timedelta, status: RpoStatus) -> None:
    assert rpo_status(T0, 24, T0 + age) is status


def test_clipping_and_percent() -> None:
    lo, hi = T0, T0 + 10 * H
    assert clipped_seconds(T0 - H, T0 + H, lo, hi) == 3600
    assert clipped_seconds(T0 + 9 * H, None, lo, hi) == 3600  # open: up to the end
    assert clipped_seconds(T0 + 11 * H, None, lo, hi) == 0
    assert compliant_percent(0, 0) is None
    assert compliant_percent(36000, 3600) == 90.0
    assert compliant_percent(100, 200) == 0.0


@pytest.mark.parametrize(
    ("evidence", "cause"),
    [
        (BreachEvidence(True, "queued", "no proxy for host H1"), BreachCause.NO_PROXY),
        # A missed job that waited for a proxy: the proxy is the root cause.
        (BreachEvidence(True, "missed", "no proxy for host H1", "not started"), BreachCause.NO_PROXY),
        (
            BreachEvidence(True, "skipped", None, "datastore ds1 has 5.0% free (below 10%)"),
            BreachCause.DATASTORE_SPACE,
        ),
        (BreachEvidence(True, "skipped", None, "VM has an independent disk"), BreachCause.FAILED_JOBS),
        (BreachEvidence(True, "failed", None, "vCenter went away"), BreachCause.FAILED_JOBS),
        (BreachEvidence(False, "failed", None, "boom"), BreachCause.FAILED_JOBS),
        (BreachEvidence(True, "missed", None, "not started by the end"), BreachCause.MISSED_WINDOW),
        # A waiting reason left on a job that ended otherwise says nothing.
        (BreachEvidence(True, "cancelled", "no proxy for host H1"), BreachCause.OTHER),
        (BreachEvidence(True, "succeeded", proxy_online=False), BreachCause.NO_PROXY),
        (BreachEvidence(False, None, proxy_online=False), BreachCause.NO_PROXY),
        (BreachEvidence(True, "succeeded", critical_datastores=("ds1",)), BreachCause.DATASTORE_SPACE),
        (BreachEvidence(False), BreachCause.NOT_YET_BACKED_UP),
        (BreachEvidence(True, "succeeded"), BreachCause.OTHER),
        (BreachEvidence(True, "running"), BreachCause.OTHER),
    ],
)
def test_breach_cause_from_evidence(evidence: BreachEvidence, cause: BreachCause) -> None:
    found, detail = breach_cause(evidence)
    assert found is cause
    assert detail


def test_clock_thresholds() -> None:
    window = 2 * H
    on_track = evaluate_clock(T0, window, T0 + 95 * timedelta(minutes=1))
    assert on_track.status is ClockStatus.ON_TRACK and on_track.at_risk_at is None
    at_risk = evaluate_clock(T0, window, T0 + 96 * timedelta(minutes=1))  # 80% reached
    assert at_risk.status is ClockStatus.AT_RISK and at_risk.at_risk_at == T0 + 96 * timedelta(minutes=1)
    assert evaluate_clock(T0, window, T0 + window).status is ClockStatus.AT_RISK  # at the deadline
    late = evaluate_clock(T0, window, T0 + window + timedelta(seconds=1))
    assert late.status is ClockStatus.BREACHED and late.breached_at == T0 + window
    met = evaluate_clock(T0, window, T0 + 10 * H, stopped_at=T0 + 1.9 * H)
    assert met.status is ClockStatus.MET and met.at_risk_at is not None and met.breached_at is None
    met_late = evaluate_clock(T0, window, T0 + 10 * H, stopped_at=T0 + 3 * H)
    assert met_late.status is ClockStatus.BREACHED


def test_restore_clocks_onsite_offsite_and_rto() -> None:
    def clocks(source: str, rto: int | None, now: datetime, **kw: object) -> tuple[str, str]:
        c = restore_clocks(
            requested_at=T0,
            initiated_at=kw.get("initiated_at"),  # type: ignore[arg-type]
            completed_at=kw.get("completed_at"),  # type: ignore[arg-type]
            state=str(kw.get("state", "requested")),
            source_location=source,
            rto_hours=rto,
            now=now,
        )
        return c.initiation.status.value, c.completion.status.value

    assert clocks("onsite", None, T0 + 2.5 * H) == ("breached", "on_track")
    assert clocks("offsite", None, T0 + 2.5 * H) == ("on_track", "on_track")
    assert clocks("offsite", None, T0 + 4.8 * H) == ("at_risk", "on_track")
    assert clocks("offsite", None, T0 + 6.1 * H) == ("breached", "on_track")
    assert clocks("onsite", None, T0 + 9.6 * H, initiated_at=T0 + H, state="running") == ("met", "at_risk")
    assert clocks("onsite", None, T0 + 12.1 * H, initiated_at=T0 + H) == ("met", "breached")
    assert clocks("onsite", 4, T0 + 3.2 * H, initiated_at=T0 + H) == ("met", "at_risk")
    assert clocks("onsite", 4, T0 + 4.1 * H, initiated_at=T0 + H) == ("met", "breached")
    done = clocks("onsite", 4, T0 + 50 * H, initiated_at=T0 + H, completed_at=T0 + 2 * H, state="succeeded")
    assert done == ("met", "met")
    failed = clocks("onsite", 4, T0 + 50 * H, initiated_at=T0 + H, completed_at=T0 + 2 * H, state="failed")
    assert failed == ("met", "failed")
    cancelled = clocks("onsite", 4, T0 + 50 * H, completed_at=T0 + H, state="cancelled")
    assert cancelled == ("cancelled", "cancelled")
