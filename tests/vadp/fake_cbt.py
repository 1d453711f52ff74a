"""A FAKE Changed Block Tracker, for tests only.

The govmomi simulator does not implement ``QueryChangedDiskAreas``, so tests that need CBT
answers use this fake instead of :class:`app.vadp.cbt.VimChangedBlockTracker`. It is NOT a
model of vSphere's CBT: the test tells it which extents changed (per disk, since a change
id) and it hands them back, recording every question it was asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.vadp.cbt import Extent, normalize
from app.vadp.session import VCenterSession
from app.vadp.types import SnapshotHandle, VmHandle


@dataclass
class FakeChangedBlockTracker:
    """FAKE: answers with the extents a test registered with :meth:`set_changes`.

    A disk / change id pair that was never registered answers ``None`` ("CBT unavailable,
    read the whole disk"), like a reset CBT on a real vCenter.
    """

    changes: dict[tuple[int, str], list[Extent]] = field(default_factory=dict)
    questions: list[tuple[str, str, int, int, str]] = field(default_factory=list)

    def set_changes(self, disk_key: int, since_change_id: str, extents: list[Extent]) -> None:
        self.changes[(disk_key, since_change_id)] = list(extents)

    def changed_areas(
        self,
        session: VCenterSession,
        vm: VmHandle,
        snapshot: SnapshotHandle,
        disk_key: int,
        disk_size: int,
        since_change_id: str,
    ) -> list[Extent] | None:
        self.questions.append((vm.moid, snapshot.moid, disk_key, disk_size, since_change_id))
        extents = self.changes.get((disk_key, since_change_id))
        return None if extents is None else normalize(extents, disk_size)
