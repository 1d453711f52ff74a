"""Changed Block Tracking: the tracker protocol, the QueryChangedDiskAreas paging loop, and an
incremental read wired through a FAKE tracker (the simulator has no QueryChangedDiskAreas)."""

from __future__ import annotations

import hashlib
import random

import pytest

from app.vadp import snapshots
from app.vadp.cbt import (
    ChangedBlockTracker,
    ChangeTrackingUnavailable,
    DiskChangePage,
    Extent,
    VimChangedBlockTracker,
    normalize,
)
from app.vadp.datastore_http import DatastoreHttpTransport
from app.vadp.errors import VCenterError
from app.vadp.session import VCenterSession
from app.vadp.transport import DiskReader
from app.vadp.types import SnapshotHandle, VmHandle
from tests.support.vcsim import VcsimServer
from tests.vadp.conftest import handle_of
from tests.vadp.disks import MIB, fill_disk, flat_name, put_file
from tests.vadp.fake_cbt import FakeChangedBlockTracker

VM = VmHandle("vm-1")
SNAPSHOT = SnapshotHandle("snapshot-1", "vm-1")
GIB = 1 << 30


class FakeQuery:
    """A FAKE of the one vCenter call: answers QueryChangedDiskAreas from a list of pages."""

    def __init__(self, pages: dict[int, DiskChangePage] | None = None, fail_at: int | None = None) -> None:
        self.pages = pages or {}
        self.fail_at = fail_at
        self.calls: list[tuple[int, int, str]] = []

    def __call__(
        self,
        session: VCenterSession,
        vm: VmHandle,
        snapshot: SnapshotHandle,
        disk_key: int,
        start: int,
        change_id: str,
    ) -> DiskChangePage:
        self.calls.append((disk_key, start, change_id))
        if start == self.fail_at:
            raise ChangeTrackingUnavailable("FileFault: cannot open the change tracking file")
        return self.pages[start]


def track(query: FakeQuery, size: int, change_id: str = "52 aa/7") -> list[Extent] | None:
    tracker: ChangedBlockTracker = VimChangedBlockTracker(query)
    return tracker.changed_areas(None, VM, SNAPSHOT, 2000, size, change_id)  # type: ignore[arg-type]


def test_the_loop_pages_through_the_disk_and_merges_areas() -> None:
    query = FakeQuery(
        {
            0: DiskChangePage(0, GIB, ((0, 65536), (65536, 4096), (GIB - 4096, 4096))),
            GIB: DiskChangePage(GIB, GIB, ()),
            2 * GIB: DiskChangePage(2 * GIB, GIB, ((2 * GIB, 512),)),
        }
    )
    assert track(query, 3 * GIB) == [(0, 69632), (GIB - 4096, 4096), (2 * GIB, 512)]
    assert query.calls == [(2000, 0, "52 aa/7"), (2000, GIB, "52 aa/7"), (2000, 2 * GIB, "52 aa/7")]


def test_the_loop_starts_each_call_where_the_last_answer_ended() -> None:
    """vCenter may cover less (or a different range) than asked; the next call follows its answer."""
    query = FakeQuery(
        {
            0: DiskChangePage(0, 1000, ((10, 10),)),
            1000: DiskChangePage(1000, 24, ((1000, 5000),)),  # an area reaching beyond the disk is clipped
        }
    )
    assert track(query, 1024) == [(10, 10), (1000, 24)]
    assert [start for _, start, _ in query.calls] == [0, 1000]


def test_unavailable_cbt_means_read_everything() -> None:
    query = FakeQuery({0: DiskChangePage(0, GIB, ((0, 4096),))}, fail_at=GIB)
    assert track(query, 2 * GIB) is None
    assert track(FakeQuery(), 10, change_id="") is None  # no baseline change id: nothing to ask


def test_a_page_that_does_not_advance_means_read_everything() -> None:
    """The rest of the disk is not known to be unchanged: never copy it from the previous point."""
    query = FakeQuery({0: DiskChangePage(0, 0, ((0, 4096),))})
    assert track(query, GIB) is None
    assert len(query.calls) == 1
    stuck = FakeQuery({0: DiskChangePage(0, GIB, ((0, 4096),)), GIB: DiskChangePage(GIB, 0, ())})
    assert track(stuck, 2 * GIB) is None


def test_the_loop_is_bounded() -> None:
    pages = {i: DiskChangePage(i, 1, ()) for i in range(10)}
    tracker = VimChangedBlockTracker(FakeQuery(pages), max_calls=5)
    with pytest.raises(VCenterError, match="did not cover the disk"):
        tracker.changed_areas(None, VM, SNAPSHOT, 2000, 10, "*")  # type: ignore[arg-type]


def test_normalize() -> None:
    assert normalize([(50, 10), (0, 10), (5, 10), (15, 0), (60, 5), (-5, 10), (95, 100)], 100) == [
        (0, 15),
        (50, 15),
        (95, 5),
    ]


@pytest.mark.vcsim
def test_the_simulator_has_no_cbt_so_the_vim_tracker_says_read_everything(
    sim: VcsimServer, sim_session: VCenterSession
) -> None:
    vm = handle_of(sim, "DC0_H0_VM0")
    snapshot = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-cbt").snapshot
    tracker = VimChangedBlockTracker()
    assert tracker.changed_areas(sim_session, vm, snapshot, 1, MIB, "*") is None  # MethodNotFound


def incremental(reader: DiskReader, previous: bytes, extents: list[Extent] | None) -> bytes:
    """What a backup runner does: copy the previous image, re-read only the changed extents."""
    if extents is None:
        return reader.read_at(0, reader.size)
    image = bytearray(previous)
    for offset, length in extents:
        image[offset : offset + length] = reader.read_at(offset, length)
    return bytes(image)


@pytest.mark.vcsim
def test_incremental_read_through_the_fake_tracker(sim: VcsimServer, sim_session: VCenterSession) -> None:
    """Full backup, guest writes, incremental backup of the told extents == the new disk."""
    content = fill_disk(sim, "DC0_H0_VM0", 4 * MIB, seed=11, kind="random")
    vm = handle_of(sim, "DC0_H0_VM0")
    transport = DatastoreHttpTransport()
    first = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-full").snapshot
    with transport.open(sim_session, vm, first, content.disk_key) as reader:
        full = reader.read_at(0, reader.size)
    assert full == content.data
    snapshots.remove_snapshot(sim_session, first)

    # The "guest" changes three areas (the whole flat file is rewritten through /folder).
    rng = random.Random(5)
    changed = [(0, 512), (MIB + 4096, 65536), (4 * MIB - 1000, 1000)]
    new = bytearray(content.data)
    for offset, length in changed:
        new[offset : offset + length] = rng.randbytes(length)
    put_file(sim, "DC0", flat_name(content.file_name), bytes(new))

    tracker = FakeChangedBlockTracker()
    tracker.set_changes(content.disk_key, "change-1", changed)
    second = snapshots.create_snapshot(sim_session, vm, "vmrecovery-p1-incr").snapshot
    with transport.open(sim_session, vm, second, content.disk_key) as reader:
        extents = tracker.changed_areas(sim_session, vm, second, content.disk_key, reader.size, "change-1")
        assert extents == sorted(changed)
        image = incremental(reader, full, extents)
        assert hashlib.sha256(image).hexdigest() == hashlib.sha256(new).hexdigest()
        # A change id the tracker does not know: CBT unavailable, the whole disk is read.
        unknown = tracker.changed_areas(sim_session, vm, second, content.disk_key, reader.size, "reset")
        assert unknown is None
        assert incremental(reader, full, unknown) == bytes(new)
    assert [q[-1] for q in tracker.questions] == ["change-1", "reset"]
