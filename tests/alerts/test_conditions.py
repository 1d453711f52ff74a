"""Alert conditions computed from evidence (pure functions: no catalog, no loop)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from app.alerts.conditions import failed_backups, snapshots_left
from app.alerts.models import Alert
from app.alerts.repository import BackupOutcome, SnapshotEvidence, WatchedVm
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


def test_an_application_backup_alert_ends_when_the_policy_stops_backing_up_applications() -> None:
    """The image backups go on (the VM stays protected), the application ones were removed from the
    policy: their last failure is no longer a condition, the image one still is."""
    with_apps = WatchedVm(VM.id, VM.name, VM.tenant_id, protected=True, applications=True)
    images_only = WatchedVm(VM.id, VM.name, VM.tenant_id, protected=True, applications=False)
    outcomes = [
        BackupOutcome(VM.id, "app_backup", uuid.uuid4(), "failed", "pg_dump failed", T0),
        BackupOutcome(VM.id, "backup", uuid.uuid4(), "failed", "disk read failed", T0),
    ]
    app_key, image_key = f"backup_failed:{VM.id}:application", f"backup_failed:{VM.id}"
    assert set(failed_backups(outcomes, {VM.id: with_apps}, [])) == {app_key, image_key}
    assert set(failed_backups(outcomes, {VM.id: images_only}, [])) == {image_key}
    # An open alert whose outcome left the evidence window is kept only while it still applies.
    open_alert = Alert(
        id=uuid.uuid4(),
        key=app_key,
        kind="backup_failed",
        severity="warning",
        tenant_id=VM.tenant_id,
        subject_type="vm",
        subject_id=str(VM.id),
        message="Application backup of VM db failed",
        detail={},
        opened_at=T0,
    )
    assert set(failed_backups([], {VM.id: with_apps}, [open_alert])) == {app_key}
    assert failed_backups([], {VM.id: images_only}, [open_alert]) == {}
