"""Backup snapshots: take (quiesced when possible), list, remove, and clean up orphans by name.

A proxy names its snapshots ``vmrecovery-<proxy-id>-<job-id>``. If it dies between taking a
snapshot and removing it, nothing in vCenter says who owns the leftover except that name,
so a restarted proxy finds its snapshots by prefix (:func:`remove_snapshots_named`), on one
VM or on every VM of the vCenter in one PropertyCollector read, and removes them. Leftover
snapshots grow their delta disks without bound, so this clean-up matters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from pyVmomi import vim

from app.vadp.errors import SnapshotCleanupError, VCenterError, VCenterErrorKind
from app.vadp.session import DEFAULT_TASK_TIMEOUT_S, VCenterSession
from app.vadp.types import SnapshotHandle, SnapshotInfo, SnapshotResult, VmHandle

log = logging.getLogger(__name__)

TOOLS_RUNNING = "guestToolsRunning"


def create_snapshot(
    session: VCenterSession,
    vm: VmHandle,
    name: str,
    description: str = "",
    quiesce: bool = False,
    *,
    timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
) -> SnapshotResult:
    """Take a disk-only snapshot for a backup.

    Quiescing (VSS / guest freeze through VMware Tools) is attempted only when asked for
    and the VM is powered on with Tools running. When it is asked for but impossible, or the
    quiesced snapshot fails (a VSS writer timing out is common), a crash-consistent snapshot
    is taken instead and ``warning`` says why. A powered-off VM's disks are consistent
    anyway, so no warning is given for it.
    """
    obj = session.vm(vm)
    props = session.read(obj, "runtime.powerState", "guest.toolsRunningStatus")
    if not props:
        raise VCenterError(VCenterErrorKind.NOT_FOUND, f"VM {vm.moid} does not exist (any more)")
    powered_on = props.get("runtime.powerState") == "poweredOn"
    powered_off = props.get("runtime.powerState") == "poweredOff"
    tools = str(props.get("guest.toolsRunningStatus") or "unknown")
    warning = None
    if quiesce and powered_on and tools == TOOLS_RUNNING:
        try:
            return SnapshotResult(_take(session, obj, vm, name, description, True, timeout_s), True)
        except VCenterError as exc:
            # Network trouble or our own wait timing out may leave the task running; a second
            # snapshot on top would be worse than failing the job, so only a failed task retries.
            if exc.transient or exc.kind is VCenterErrorKind.NOT_FOUND:
                raise
            warning = (
                f"the quiesced snapshot failed ({exc.message}); took a crash-consistent snapshot instead"
            )
            log.warning("VM %s: %s", vm.moid, warning)
    elif quiesce and powered_on:
        warning = (
            f"VMware Tools are not running in the VM (status {tools}); "
            "took a crash-consistent snapshot instead of a quiesced one"
        )
    snapshot = _take(session, obj, vm, name, description, False, timeout_s)
    return SnapshotResult(snapshot, False, warning, powered_off=powered_off)


def _take(
    session: VCenterSession,
    obj: Any,
    vm: VmHandle,
    name: str,
    description: str,
    quiesce: bool,
    timeout_s: float,
) -> SnapshotHandle:
    kind = "quiesced" if quiesce else "crash-consistent"
    result = start_snapshot_task(session, obj, name, description, quiesce, timeout_s)
    if result is None:
        raise VCenterError(
            VCenterErrorKind.TASK_FAILED, f"taking a {kind} snapshot of VM {vm.moid} returned no snapshot"
        )
    return SnapshotHandle(str(result._moId), vm.moid)


def start_snapshot_task(
    session: VCenterSession, obj: Any, name: str, description: str, quiesce: bool, timeout_s: float
) -> Any:
    """CreateSnapshot_Task (memory never included) and its result; a seam for fault tests."""
    kind = "quiesced" if quiesce else "crash-consistent"
    return session.run_task(
        f"taking a {kind} snapshot {name!r} of VM {obj._moId}",
        obj.CreateSnapshot_Task,
        name=name,
        description=description,
        memory=False,
        quiesce=quiesce,
        timeout_s=timeout_s,
    )


def remove_snapshot(
    session: VCenterSession,
    snapshot: SnapshotHandle,
    *,
    consolidate: bool = True,
    timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
) -> None:
    """Remove one snapshot (its children stay; its data is merged into them or the VM)."""
    obj = session.snapshot(snapshot)
    session.run_task(
        f"removing snapshot {snapshot.moid} of VM {snapshot.vm_moid}",
        obj.RemoveSnapshot_Task,
        removeChildren=False,
        consolidate=consolidate,
        timeout_s=timeout_s,
    )


def list_snapshots(session: VCenterSession, vm: VmHandle) -> list[SnapshotInfo]:
    """All snapshots of ``vm``, parents before children; empty if it has none."""
    tree = session.read(session.vm(vm), "snapshot.rootSnapshotList").get("snapshot.rootSnapshotList")
    return list(_walk(tree or (), None))


def _walk(nodes: Iterable[Any], parent: str | None) -> Iterator[SnapshotInfo]:
    for node in nodes:
        moid = str(node.snapshot._moId)
        yield SnapshotInfo(
            handle=SnapshotHandle(moid, str(node.vm._moId)),
            name=str(node.name or ""),
            description=str(node.description or ""),
            created_at=_utc(node.createTime),
            quiesced=bool(node.quiesced),
            power_state=str(node.state or ""),
            parent_moid=parent,
        )
        yield from _walk(node.childSnapshotList or (), moid)


def _utc(value: Any) -> datetime | None:
    """A plain UTC datetime (pyVmomi's carry a tzinfo class of its own)."""
    if not isinstance(value, datetime):
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def find_snapshots_named(session: VCenterSession, vm: VmHandle | None, prefix: str) -> list[SnapshotInfo]:
    """Snapshots whose name starts with ``prefix``, on ``vm`` or (``None``) on every VM.

    Across all VMs this is one PropertyCollector read of ``snapshot.rootSnapshotList``;
    VMs without snapshots are simply absent from the answer.
    """
    if not prefix:
        raise ValueError("an empty prefix would match every snapshot")
    if vm is not None:
        snapshots = list_snapshots(session, vm)
    else:
        found = session.read_all(vim.VirtualMachine, ["snapshot.rootSnapshotList"])
        snapshots = [
            info
            for moid in sorted(found)
            for info in _walk(found[moid].get("snapshot.rootSnapshotList") or (), None)
        ]
    return [info for info in snapshots if info.name.startswith(prefix)]


def remove_snapshots_named(
    session: VCenterSession,
    vm: VmHandle | None,
    prefix: str,
    *,
    timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
    keep: Callable[[str], bool] | None = None,
) -> list[str]:
    """Remove every snapshot named ``prefix...`` on ``vm`` or (``None``) on all VMs.

    Returns the names removed. Children go before their parents, so that removing a
    parent never merges into a snapshot that is about to go too. One failure does not stop
    the others; if any failed, :class:`SnapshotCleanupError` lists both outcomes (the
    failed ones are left for the next clean-up round).
    """
    targets = [s for s in find_snapshots_named(session, vm, prefix) if keep is None or not keep(s.name)]
    removed: list[str] = []
    failures: list[str] = []
    for info in reversed(targets):  # pre-order reversed: children before parents
        try:
            remove_snapshot(session, info.handle, timeout_s=timeout_s)
        except VCenterError as exc:
            if exc.kind is VCenterErrorKind.NOT_FOUND:
                continue  # gone meanwhile (someone else cleaned up): fine
            failures.append(f"{info.name} on VM {info.handle.vm_moid}: {exc.message}")
            log.warning("could not remove snapshot %s of VM %s: %s", info.name, info.handle.vm_moid, exc)
            continue
        log.info("removed leftover snapshot %s of VM %s", info.name, info.handle.vm_moid)
        removed.append(info.name)
    if failures:
        raise SnapshotCleanupError(
            f"{len(failures)} snapshot(s) named {prefix}* could not be removed: " + "; ".join(failures),
            removed=removed,
            failures=failures,
        )
    return removed
