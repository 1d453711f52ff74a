"""Changed Block Tracking: which areas of a disk changed since a previous backup.

:class:`ChangedBlockTracker` is the narrow protocol the backup runner uses. Its answer is a
sorted list of non-overlapping ``(offset, length)`` byte extents, or ``None`` when CBT cannot
answer (never enabled, reset by a storage vMotion or a crash, an unknown change id), in
which case the runner reads the whole disk. ``since_change_id="*"`` asks for every
*allocated* area, which lets even a first, full backup skip never-written space.

:class:`VimChangedBlockTracker` asks vCenter (``QueryChangedDiskAreas``), one page at a
time: each answer covers ``[startOffset, startOffset + length)`` of the disk and the next
call starts where it ended. The govmomi simulator does not implement that call; tests use a
fake tracker (``tests/vadp/fake_cbt.py``) and a fake of the one query function.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from pyVmomi import vim, vmodl

from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession, fault_text
from app.vadp.types import SnapshotHandle, VmHandle

log = logging.getLogger(__name__)

Extent = tuple[int, int]

ALL_ALLOCATED = "*"


class ChangedBlockTracker(Protocol):
    def changed_areas(
        self,
        session: VCenterSession,
        vm: VmHandle,
        snapshot: SnapshotHandle,
        disk_key: int,
        disk_size: int,
        since_change_id: str,
    ) -> list[Extent] | None:
        """Extents changed since ``since_change_id`` (``"*"``: all allocated); ``None``: read all."""
        ...


class ChangeTrackingUnavailable(Exception):
    """CBT cannot answer for this disk and change id; the caller reads the whole disk."""


@dataclass(frozen=True)
class DiskChangePage:
    """One answer of QueryChangedDiskAreas: the range it covers and the changed areas in it."""

    start_offset: int
    length: int
    areas: tuple[Extent, ...]


# (session, vm, snapshot, disk key, start offset, change id) -> one page
QueryFn = Callable[[VCenterSession, VmHandle, SnapshotHandle, int, int, str], DiskChangePage]

# Faults meaning "CBT has no answer", as opposed to "the vCenter is unreachable": an invalid
# or foreign change id (InvalidArgument), a reset or missing -ctk.vmdk (FileFault), a VM
# without CBT or an old host (NotSupported, MethodNotFound), or a snapshot in flux.
_UNAVAILABLE_FAULTS = (
    vmodl.fault.InvalidArgument,
    vim.fault.FileFault,
    vmodl.fault.NotSupported,
    vmodl.fault.MethodNotFound,
    vim.fault.InvalidState,
)


def query_changed_disk_areas(
    session: VCenterSession,
    vm: VmHandle,
    snapshot: SnapshotHandle,
    disk_key: int,
    start_offset: int,
    change_id: str,
) -> DiskChangePage:
    """One QueryChangedDiskAreas call, as plain data."""
    obj = session.vm(vm)
    with session.guard(f"querying changed areas of disk {disk_key} of VM {vm.moid}"):
        try:
            info = obj.QueryChangedDiskAreas(
                snapshot=session.snapshot(snapshot),
                deviceKey=disk_key,
                startOffset=start_offset,
                changeId=change_id,
            )
        except _UNAVAILABLE_FAULTS as exc:
            raise ChangeTrackingUnavailable(fault_text(exc)) from exc
    areas = tuple((int(area.start), int(area.length)) for area in info.changedArea or ())
    return DiskChangePage(int(info.startOffset), int(info.length), areas)


class VimChangedBlockTracker:
    """CBT through vCenter's QueryChangedDiskAreas (``query`` is replaceable for tests)."""

    def __init__(self, query: QueryFn = query_changed_disk_areas, max_calls: int = 1_000_000) -> None:
        self._query = query
        self._max_calls = max_calls

    def changed_areas(
        self,
        session: VCenterSession,
        vm: VmHandle,
        snapshot: SnapshotHandle,
        disk_key: int,
        disk_size: int,
        since_change_id: str,
    ) -> list[Extent] | None:
        if not since_change_id:
            return None
        extents: list[Extent] = []
        offset = 0
        calls = 0
        while offset < disk_size:
            calls += 1
            if calls > self._max_calls:
                raise VCenterError(
                    VCenterErrorKind.API_ERROR,
                    f"QueryChangedDiskAreas of disk {disk_key} of VM {vm.moid} did not cover the disk "
                    f"after {self._max_calls} calls",
                )
            try:
                page = self._query(session, vm, snapshot, disk_key, offset, since_change_id)
            except ChangeTrackingUnavailable:
                return None
            extents.extend(page.areas)
            end = page.start_offset + page.length
            if page.length <= 0 or end <= offset:
                # An answer that covers nothing new before the disk's end cannot say the rest is
                # unchanged: taking it so would copy that rest from the previous point, a stale
                # backup that looks good. Read the whole disk instead (slower, never wrong).
                log.warning(
                    "QueryChangedDiskAreas of disk %s of VM %s stopped at offset %d of %d; "
                    "reading the whole disk",
                    disk_key,
                    vm.moid,
                    offset,
                    disk_size,
                )
                return None
            offset = end
        return normalize(extents, disk_size)


def normalize(extents: Iterable[Extent], disk_size: int) -> list[Extent]:
    """Sort, clip to the disk and merge overlapping or touching extents."""
    merged: list[Extent] = []
    for start, length in sorted(extents):
        end = min(start + length, disk_size)
        start = max(start, 0)
        if end <= start:
            continue
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_length = merged[-1]
            merged[-1] = (last_start, max(last_start + last_length, end) - last_start)
        else:
            merged.append((start, end - start))
    return merged
