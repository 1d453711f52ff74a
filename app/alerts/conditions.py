"""Which alerts should be open, from what the catalog says (no I/O).

Each function returns the conditions found, keyed by alert key. Where the evidence is read
over a recent horizon only (job history), an open alert whose subject left no evidence in it
is kept as it is: it closes on evidence that the condition cleared (a later success, the VM
gone or unprotected), never for lack of news.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.alerts.models import Alert
from app.alerts.repository import BackupOutcome, SnapshotEvidence, WatchedVm
from app.alerts.schemas import AlertKind, Condition, Severity
from app.compliance.models import RpoBreach
from app.domain.jobs import JobKind, JobState
from app.domain.proxy_status import ProxyStatus, proxy_status
from app.domain.space import SpaceStatus
from app.inventory.models import Datastore
from app.jobs.job_params import snapshot_name

#: Clean-ups that failed are tried again after these delays (1st, 2nd, then every), so that an
#: alert whose snapshot an operator removed by hand closes on the next attempt ("none left").
CLEANUP_RETRY = (timedelta(hours=1), timedelta(hours=6), timedelta(hours=24))

_FAILED_WORDS = {
    JobState.FAILED.value: "failed",
    JobState.SKIPPED.value: "was skipped",
    JobState.MISSED.value: "was missed (not started within its window)",
}


def backup_key(vm_id: uuid.UUID, kind: str) -> str:
    suffix = ":application" if kind == JobKind.APP_BACKUP.value else ""
    return f"{AlertKind.BACKUP_FAILED.value}:{vm_id}{suffix}"


def kept(alert: Alert) -> Condition:
    """An open alert carried over unchanged."""
    return Condition(
        key=alert.key,
        kind=AlertKind(alert.kind),
        severity=Severity(alert.severity),
        message=alert.message,
        tenant_id=alert.tenant_id,
        subject_type=alert.subject_type,
        subject_id=alert.subject_id,
        detail=dict(alert.detail or {}),
    )


def vm_of(alert: Alert) -> uuid.UUID | None:
    try:
        return uuid.UUID(alert.subject_id) if alert.subject_id else None
    except ValueError:
        return None


def failed_backups(
    outcomes: list[BackupOutcome], vms: dict[uuid.UUID, WatchedVm], open_alerts: list[Alert]
) -> dict[str, Condition]:
    """A protected VM whose latest backup (image, or application) failed, was skipped or was
    missed, with no success since. A skipped backup is a failure for the customer: the VM is
    not protected, whatever the reason."""
    found: dict[str, Condition] = {}
    seen: set[str] = set()
    for outcome in outcomes:
        key = backup_key(outcome.vm_id, outcome.kind)
        seen.add(key)
        vm = vms.get(outcome.vm_id)
        if vm is None or not _expects(vm, key) or outcome.state == JobState.SUCCEEDED.value:
            continue
        what = "Application backup" if outcome.kind == JobKind.APP_BACKUP.value else "Backup"
        reason = f": {outcome.error}" if outcome.error else ""
        found[key] = Condition(
            key=key,
            kind=AlertKind.BACKUP_FAILED,
            severity=Severity.WARNING,
            message=f"{what} of VM {vm.name} {_FAILED_WORDS.get(outcome.state, outcome.state)}{reason}"[
                :2000
            ],
            tenant_id=vm.tenant_id,
            subject_type="vm",
            subject_id=str(vm.id),
            detail={
                "vm_name": vm.name,
                "job_id": str(outcome.job_id),
                "job_kind": outcome.kind,
                "job_state": outcome.state,
                "finished_at": outcome.finished_at.isoformat(),
            },
        )
    for alert in open_alerts:
        vm_id = vm_of(alert)
        vm = vms.get(vm_id) if vm_id else None
        if alert.key not in seen and vm is not None and _expects(vm, alert.key):
            found[alert.key] = kept(alert)
    return found


def _expects(vm: WatchedVm, key: str) -> bool:
    """Whether the VM is still meant to have the backups the alert ``key`` is about: protected,
    and for application backups, by a policy that still has them."""
    if key.endswith(":application"):
        return vm.applications
    return vm.protected


def rpo_breaches(breaches: list[tuple[RpoBreach, str]]) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for breach, vm_name in breaches:
        key = f"{AlertKind.RPO_BREACH.value}:{breach.vm_id}"
        detail = f" ({breach.detail})" if breach.detail else ""
        found[key] = Condition(
            key=key,
            kind=AlertKind.RPO_BREACH,
            severity=Severity.CRITICAL,
            message=(
                f"VM {vm_name} has no restore point within its RPO of {breach.rpo_hours} h; "
                f"cause: {breach.cause}{detail}"
            )[:2000],
            tenant_id=breach.tenant_id,
            subject_type="vm",
            subject_id=str(breach.vm_id),
            detail={
                "vm_name": vm_name,
                "breach_id": str(breach.id),
                "rpo_hours": breach.rpo_hours,
                "started_at": breach.started_at.isoformat(),
                "cause": breach.cause,
            },
        )
    return found


def offline_proxies(
    proxies: list[tuple[uuid.UUID, str, datetime | None]],
    now: datetime,
    stale_after: timedelta,
    offline_after: timedelta,
) -> dict[str, Condition]:
    found: dict[str, Condition] = {}
    for proxy_id, name, heartbeat in proxies:
        if proxy_status(heartbeat, now, stale_after, offline_after) is not ProxyStatus.OFFLINE:
            continue
        key = f"{AlertKind.PROXY_OFFLINE.value}:{proxy_id}"
        since = (
            f"no heartbeat since {heartbeat:%Y-%m-%d %H:%M} UTC"
            if heartbeat
            else "it has never sent a heartbeat"
        )
        found[key] = Condition(
            key=key,
            kind=AlertKind.PROXY_OFFLINE,
            severity=Severity.CRITICAL,
            message=f"Proxy {name} is offline ({since}); jobs of the hosts only it serves wait",
            subject_type="proxy",
            subject_id=str(proxy_id),
            detail={"proxy_name": name, "last_heartbeat_at": heartbeat.isoformat() if heartbeat else None},
        )
    return found


def low_datastores(datastores: list[Datastore]) -> dict[str, Condition]:
    """One alert per datastore, whose severity follows its free space."""
    found: dict[str, Condition] = {}
    for ds in datastores:
        critical = ds.space_status == SpaceStatus.CRITICAL.value
        key = f"{AlertKind.DATASTORE_LOW.value}:{ds.id}"
        consequence = (
            "below 10%: backups of its VMs are skipped" if critical else "below 15%: backups stop below 10%"
        )
        found[key] = Condition(
            key=key,
            kind=AlertKind.DATASTORE_LOW,
            severity=Severity.CRITICAL if critical else Severity.WARNING,
            message=f"Datastore {ds.name} has {ds.free_percent:.1f}% free ({consequence})",
            tenant_id=ds.tenant_id,
            subject_type="datastore",
            subject_id=str(ds.id),
            detail={
                "datastore_name": ds.name,
                "free_percent": ds.free_percent,
                "free_bytes": ds.free_bytes,
                "capacity_bytes": ds.capacity_bytes,
            },
        )
    return found


@dataclass(frozen=True)
class CleanupRequest:
    """A snapshot clean-up job to queue: ``slot`` makes it unique per piece of evidence."""

    vm_id: uuid.UUID
    tenant_id: uuid.UUID
    policy_id: uuid.UUID | None
    snapshot_name: str
    for_job_id: str
    slot: datetime


def _snapshot_of(evidence: SnapshotEvidence) -> str | None:
    if evidence.kind == JobKind.SNAPSHOT_CLEANUP.value:
        name = evidence.params.get("snapshot_name")
        return str(name) if name else None
    return snapshot_name(evidence.proxy_id, evidence.job_id, evidence.attempt) if evidence.proxy_id else None


def _snapshots_still_left(
    items: list[SnapshotEvidence],
) -> list[tuple[str | None, SnapshotEvidence, int]]:
    """Per snapshot still left on the VM: its name, its latest evidence, and how many clean-ups
    of it failed since it was left (in the order the evidence came)."""
    # A clean-up answers the backup before it, even within one clock tick.
    ordered = sorted(items, key=lambda e: (e.finished_at, e.kind == JobKind.SNAPSHOT_CLEANUP.value))
    left: dict[str | None, tuple[SnapshotEvidence, int]] = {}
    for item in ordered:
        name = _snapshot_of(item)
        if item.kind != JobKind.SNAPSHOT_CLEANUP.value:
            left[name] = (item, 0)
        elif item.state == JobState.SUCCEEDED.value:
            left.pop(name, None)
        else:
            left[name] = (item, left.get(name, (item, 0))[1] + 1)
    return [(name, last, failures) for name, (last, failures) in left.items()]


def snapshots_left(
    evidence: list[SnapshotEvidence],
    vms: dict[uuid.UUID, WatchedVm],
    open_alerts: list[Alert],
    cleanup_pending: set[uuid.UUID],
    now: datetime,
) -> tuple[dict[str, Condition], list[CleanupRequest]]:
    """A VM with a snapshot whose latest word is "left behind": a backup that could not remove
    it, or a clean-up of it that failed. Only a clean-up of that snapshot that succeeded clears
    it (a clean-up removes the snapshot it names, nothing else), so each piece of evidence asks
    for a clean-up job: at once after a backup, after a delay after a failed clean-up."""
    by_vm: dict[uuid.UUID, list[SnapshotEvidence]] = defaultdict(list)
    for item in evidence:
        by_vm[item.vm_id].append(item)
    found: dict[str, Condition] = {}
    requests: list[CleanupRequest] = []
    for vm_id, items in by_vm.items():
        vm = vms.get(vm_id)
        if vm is None:
            continue  # gone from vCenter: so is its snapshot
        left = _snapshots_still_left(items)
        if not left:
            continue
        # The alert speaks of the most recent word; every snapshot left gets its clean-up.
        name, latest, failures = max(left, key=lambda entry: (entry[1].finished_at, str(entry[0])))
        key = f"{AlertKind.SNAPSHOT_LEFT.value}:{vm_id}"
        named = f" ({name})" if name else ""
        others = f"; {len(left) - 1} more snapshot(s) of backups are left too" if len(left) > 1 else ""
        if failures:
            message = (
                f"A backup snapshot{named} is left on VM {vm.name} and {failures} clean-up attempt(s) "
                f"failed{others}; remove it in vCenter if it stays (the next clean-up attempt then "
                "closes this alert)"
            )
        else:
            message = (
                f"A backup snapshot{named} could not be removed from VM {vm.name}; a clean-up job is "
                f"queued{others}"
            )
        found[key] = Condition(
            key=key,
            kind=AlertKind.SNAPSHOT_LEFT,
            severity=Severity.WARNING,
            message=message,
            tenant_id=vm.tenant_id,
            subject_type="vm",
            subject_id=str(vm_id),
            detail={
                "vm_name": vm.name,
                "snapshot_name": name,
                "job_id": str(latest.job_id),
                "snapshot_names": sorted(n for n, _, _ in left if n),
            },
        )
        if vm_id in cleanup_pending:
            continue
        for snapshot, last, failed in left:
            retry_at = last.finished_at
            if failed:
                retry_at += CLEANUP_RETRY[min(failed, len(CLEANUP_RETRY)) - 1]
            if snapshot and now >= retry_at:
                for_job = str(last.params.get("for_job_id") or last.job_id)
                requests.append(
                    CleanupRequest(vm_id, last.tenant_id, last.policy_id, snapshot, for_job, retry_at)
                )
    for alert in open_alerts:
        subject = vm_of(alert)
        if subject is not None and subject not in by_vm and subject in vms:
            found[alert.key] = kept(alert)
    return found, requests
