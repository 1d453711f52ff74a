"""Alert conditions computed from evidence (pure functions: no catalog, no loop)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.alerts.conditions import snapshots_left
from app.alerts.repository import SnapshotEvidence, WatchedVm
from app.jobs.job_params import snapshot_name

T0 = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)
VM = WatchedVm(id=uuid.uuid4(), name="db", tenant_id=uuid.uuid4(), protected=True)
PROXY = uuid.uuid4()


def backup_left(job_id: uuid.UUID, at: datetime) -> SnapshotEvidence:
    return SnapshotEvidence(VM.id, VM.tenant_id, job_id, "backup", "failed", at, PROXY, None, {}, 1)


def cleanup(of: str, for_job: uuid.UUID, state: str, at: datetime) -> SnapshotEvidence:
    params = {"snapshot_name": of, "for_job_id": str(for_job)}
    return SnapshotEvidence(
        VM.id, VM.tenant_id, uuid.uuid4(), "snapshot_cleanup", state, at, PROXY, None, params, 1
    )


def test_a_clean_up_of_one_snapshot_does_not_clear_another_left_since() -> None:
    """B1 leaves S1 and its clean-up fails; B2 leaves S2 while S1's clean-up waits to retry; then
    S1's clean-up succeeds. S2 is still on the VM: the alert stays, and S2 gets its clean-up."""
    b1, b2 = uuid.uuid4(), uuid.uuid4()
    s1, s2 = snapshot_name(PROXY, b1, 1), snapshot_name(PROXY, b2, 1)
    evidence = [
        backup_left(b1, T0),
        cleanup(s1, b1, "failed", T0 + timedelta(minutes=5)),
        backup_left(b2, T0 + timedelta(days=1)),
        cleanup(s1, b1, "succeeded", T0 + timedelta(days=1, minutes=5)),
    ]
    now = T0 + timedelta(days=1, minutes=6)
    found, requests = snapshots_left(evidence, {VM.id: VM}, [], set(), now)
    (alert,) = found.values()
    assert alert.detail["snapshot_name"] == s2 and alert.detail["snapshot_names"] == [s2]
    assert [(r.snapshot_name, r.for_job_id) for r in requests] == [(s2, str(b2))]
    # Both left: one alert naming the latest, a clean-up for each whose retry is due.
    found, requests = snapshots_left(evidence[:3], {VM.id: VM}, [], set(), now + timedelta(hours=1))
    (alert,) = found.values()
    assert alert.detail["snapshot_names"] == sorted([s1, s2]) and "1 more snapshot" in alert.message
    assert sorted(r.snapshot_name for r in requests) == sorted([s1, s2])
    # Nothing is queued while a clean-up of the VM is pending.
    assert snapshots_left(evidence[:3], {VM.id: VM}, [], {VM.id}, now)[1] == []
    # S2's own clean-up succeeding clears the VM.
    done = [*evidence, cleanup(s2, b2, "succeeded", now)]
    assert snapshots_left(done, {VM.id: VM}, [], set(), now) == ({}, [])
