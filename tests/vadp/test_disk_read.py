"""Reading a snapshot's disk with the datastore-HTTP transport, byte for byte.

The content is written by :mod:`tests.vadp.disks` (a real ext4 image, PUT through /folder
without any app code) and read back through :class:`DatastoreHttpTransport` with ranged GETs
from several threads.

What the simulator cannot model: on ESXi a snapshot switches the running VM to a new delta
disk, so writes made after the snapshot never reach the file the snapshot names, and the
reader (which follows the snapshot's own configuration) keeps returning the snapshot's
data. The simulator creates no delta disk, and even reconfiguring the VM's disk after a
snapshot rewrites the snapshot's recorded device list in place (its config shares the VM's
device array), so the isolation cannot be shown on it. What is checked instead: the reader
reads the file named in the snapshot's config; a disk that was already a delta at snapshot
time is refused rather than read as half a disk.
"""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from pyVmomi import vim

from app.vadp import snapshots, vms
from app.vadp.datastore_http import NAME, DatastoreHttpTransport, HttpDiskReader, flat_file
from app.vadp.errors import DiskIOError, VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession
from app.vadp.transport import get_transport, register_transport, transport_names
from app.vadp.types import DatastoreRef, SnapshotHandle, VmDisk, VmHandle
from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.conftest import handle_of
from tests.vadp.disks import MIB, DiskContent, fill_disk, put_file
from tests.vadp.reference import find, props, wait_for_task

pytestmark = pytest.mark.vcsim

VM = "DC0_H0_VM0"


def read_all(reader: HttpDiskReader, chunk: int, threads: int = 8) -> bytes:
    offsets = range(0, reader.size, chunk)
    with ThreadPoolExecutor(threads) as pool:
        parts = pool.map(lambda offset: reader.read_at(offset, min(chunk, reader.size - offset)), offsets)
        return b"".join(parts)


@pytest.fixture
def filled(sim: VcsimServer) -> DiskContent:
    return fill_disk(sim, VM, 8 * MIB, seed=7)


def snapshot_of(session: VCenterSession, vm: VmHandle, name: str = "vmrecovery-p1-read") -> SnapshotHandle:
    return snapshots.create_snapshot(session, vm, name).snapshot


def test_snapshot_disk_reads_byte_exact_in_parallel(
    sim: VcsimServer, sim_session: VCenterSession, filled: DiskContent
) -> None:
    assert filled.kind == "ext4" or filled.kind == "random"
    vm = handle_of(sim, VM)
    snapshot = snapshot_of(sim_session, vm)
    with DatastoreHttpTransport().open(sim_session, vm, snapshot, filled.disk_key) as reader:
        assert reader.size == 8 * MIB
        assert hashlib.sha256(read_all(reader, 1 * MIB)).hexdigest() == filled.sha256
        # Odd sizes and offsets, unaligned to anything, from many threads at once.
        rng = random.Random(3)
        ranges = [(rng.randrange(reader.size - 70_000), rng.randrange(1, 70_000)) for _ in range(64)]
        with ThreadPoolExecutor(16) as pool:
            got = list(pool.map(lambda r: reader.read_at(*r), ranges))
        assert got == [filled.data[o : o + n] for o, n in ranges]
        assert reader.read_at(reader.size - 1, 1) == filled.data[-1:]
        assert reader.read_at(5, 0) == b""
    if filled.kind == "ext4":
        assert filled.data[1080:1082] == b"\x53\xef"  # the ext4 superblock magic


def test_the_reader_reads_the_file_named_in_the_snapshot(
    sim: VcsimServer, sim_session: VCenterSession, filled: DiskContent
) -> None:
    vm = handle_of(sim, VM)
    snapshot = snapshot_of(sim_session, vm)
    disk = vms.snapshot_disk(sim_session, snapshot, filled.disk_key)
    facts = vms.read_vm(sim_session, vm)
    with DatastoreHttpTransport().open(sim_session, vm, snapshot, facts.disk(filled.disk_key)) as reader:
        assert reader.file.display == disk.file_name.replace(".vmdk", "-flat.vmdk")
        assert reader.file.datastore_moid == facts.datastores[0].moid
        before = reader.read_at(0, 4096)
        # Writes after the snapshot: on ESXi they would go to a delta and `before` would stay
        # what the reader returns. The simulator writes the base disk in place (see the module
        # docstring), so only the fact that the reader follows the snapshot's file is checked.
        assert before == filled.data[:4096]


def test_a_disk_that_was_a_delta_at_snapshot_time_is_refused(
    sim: VcsimServer, sim_session: VCenterSession, filled: DiskContent
) -> None:
    """A VM with an older snapshot writes to a delta; reading it alone would be half a disk."""
    with reference.session(sim) as si:
        vm = find(si, vim.VirtualMachine, VM)
        disk = next(
            d
            for d in props(si, vm, "config.hardware.device")["config.hardware.device"]
            if isinstance(d, vim.vm.device.VirtualDisk)
        )
        delta = disk.backing.fileName.replace(".vmdk", "-000001.vmdk")
        for name in (delta, delta.replace(".vmdk", "-flat.vmdk")):
            put_file(sim, "DC0", name, b"")
        disk.backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo(
            fileName=delta, diskMode="persistent", parent=disk.backing
        )
        change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
        wait_for_task(si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))
    handle = handle_of(sim, VM)
    snapshot = snapshot_of(sim_session, handle)
    with pytest.raises(VCenterError) as caught:
        DatastoreHttpTransport().open(sim_session, handle, snapshot, filled.disk_key)
    assert caught.value.kind is VCenterErrorKind.UNSUPPORTED
    assert "delta disk" in caught.value.message
    assert not caught.value.transient


def test_missing_disk_file_is_a_clear_error(
    sim: VcsimServer, sim_session: VCenterSession, filled: DiskContent
) -> None:
    vm = handle_of(sim, VM)
    snapshot = snapshot_of(sim_session, vm)
    flat = filled.file_name.replace(".vmdk", "-flat.vmdk")
    with reference.session(sim) as si:
        datacenter = find(si, vim.Datacenter, "DC0")
    file_manager = sim_session.content.fileManager
    sim_session.run_task(
        "deleting the flat file",
        file_manager.DeleteDatastoreFile_Task,
        name=flat,
        datacenter=sim_session.managed(vim.Datacenter, datacenter._moId),
    )
    with pytest.raises(DiskIOError) as caught:
        DatastoreHttpTransport().open(sim_session, vm, snapshot, filled.disk_key)
    error = caught.value
    assert error.kind is VCenterErrorKind.NOT_FOUND
    assert error.file == flat
    assert flat in error.message
    assert "HTTP 404" in error.message
    assert "offset 0" in error.message
    assert not error.transient


def test_a_flat_file_shorter_than_the_disk_is_refused(sim: VcsimServer, sim_session: VCenterSession) -> None:
    """The simulator's untouched disks: 1 MiB capacity, empty flat file."""
    vm = handle_of(sim, "DC0_H0_VM1")
    snapshot = snapshot_of(sim_session, vm)
    key = vms.read_vm(sim_session, vm).disks[0].key
    with pytest.raises(DiskIOError) as caught:
        DatastoreHttpTransport().open(sim_session, vm, snapshot, key)
    assert "holds 0 bytes" in caught.value.message
    assert "1048576" in caught.value.message


def test_reads_outside_the_disk_and_after_close_are_refused(
    sim: VcsimServer, sim_session: VCenterSession, filled: DiskContent
) -> None:
    vm = handle_of(sim, VM)
    reader = DatastoreHttpTransport().open(sim_session, vm, snapshot_of(sim_session, vm), filled.disk_key)
    with pytest.raises(ValueError, match="outside"):
        reader.read_at(reader.size - 10, 11)
    with pytest.raises(ValueError, match="outside"):
        reader.read_at(-1, 1)
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read_at(0, 1)


def test_snapshot_of_another_vm_is_refused(sim: VcsimServer, sim_session: VCenterSession) -> None:
    vm = handle_of(sim, VM)
    other = snapshot_of(sim_session, handle_of(sim, "DC0_H0_VM1"))
    with pytest.raises(ValueError, match="belongs to VM"):
        DatastoreHttpTransport().open(sim_session, vm, other, 1)


class FlakyTransport(httpx.BaseTransport):
    """Fails the first ``failures`` ranged reads with a connection error, then passes through."""

    def __init__(self, failures: int, status: int | None = None) -> None:
        self.inner = httpx.HTTPTransport()
        self.failures = failures
        self.status = status
        self.calls = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        is_read = request.headers.get("range", "") not in ("", "bytes=0-0")
        if is_read and self.failures > 0:
            self.failures -= 1
            if self.status is not None:
                return httpx.Response(self.status, request=request)
            raise httpx.ConnectError("connection reset by peer", request=request)
        return self.inner.handle_request(request)


@pytest.fixture
def flaky_session(sim_session: VCenterSession) -> Any:
    def install(transport: FlakyTransport) -> None:
        client = sim_session.http
        sim_session._http = httpx.Client(
            base_url=client.base_url, headers=client.headers, transport=transport, timeout=10
        )
        client.close()

    return install


def test_transient_errors_are_retried(
    sim: VcsimServer,
    sim_session: VCenterSession,
    filled: DiskContent,
    flaky_session: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("app.vadp.datastore_http._BACKOFF_S", 0.001)
    vm = handle_of(sim, VM)
    reader = DatastoreHttpTransport(retries=3).open(
        sim_session, vm, snapshot_of(sim_session, vm), filled.disk_key
    )
    flaky = FlakyTransport(failures=3)
    flaky_session(flaky)
    assert reader.read_at(MIB, 100) == filled.data[MIB : MIB + 100]
    flaky.failures, flaky.status = 3, 503
    assert reader.read_at(0, 10) == filled.data[:10]
    flaky.failures, flaky.status = 4, None
    with pytest.raises(DiskIOError) as caught:
        reader.read_at(2 * MIB, 10)
    assert caught.value.transient
    assert caught.value.offset == 2 * MIB
    assert "ConnectError" in caught.value.message
    assert f"offset {2 * MIB}" in caught.value.message


def test_permanent_http_errors_are_not_retried(
    sim: VcsimServer, sim_session: VCenterSession, filled: DiskContent, flaky_session: Any
) -> None:
    vm = handle_of(sim, VM)
    reader = DatastoreHttpTransport(retries=3).open(
        sim_session, vm, snapshot_of(sim_session, vm), filled.disk_key
    )
    flaky = FlakyTransport(failures=1, status=401)
    flaky_session(flaky)
    with pytest.raises(DiskIOError) as caught:
        reader.read_at(0, 10)
    assert caught.value.kind is VCenterErrorKind.AUTH_FAILED
    assert flaky.calls == 1


def test_only_flat_base_disks_are_read() -> None:
    def disk(**changes: Any) -> VmDisk:
        base: dict[str, Any] = {
            "key": 2000,
            "label": "Hard disk 1",
            "capacity_bytes": MIB,
            "file_name": "[ds 1] vm a/vm a.vmdk",
            "datastore": DatastoreRef("datastore-1", "ds 1"),
            "controller_key": 1000,
            "unit_number": 0,
            "backing": "flat",
        }
        return VmDisk(**{**base, **changes})

    target = flat_file(disk())
    assert (target.datastore_moid, target.path, target.display) == (
        "datastore-1",
        "vm a/vm a-flat.vmdk",
        "[ds 1] vm a/vm a-flat.vmdk",
    )
    for changes, words in (
        ({"backing": "rdm"}, "rdm backing"),
        ({"backing": "sesparse"}, "sesparse backing"),
        ({"has_parent": True}, "delta disk"),
        ({"datastore": None}, "no datastore file"),
    ):
        with pytest.raises(VCenterError, match=words) as caught:
            flat_file(disk(**changes))
        assert caught.value.kind is VCenterErrorKind.UNSUPPORTED


def test_transports_are_found_by_name() -> None:
    assert NAME in transport_names()
    assert isinstance(get_transport(NAME), DatastoreHttpTransport)
    with pytest.raises(KeyError, match=r"known: .*datastore-http"):
        get_transport("hotadd-not-yet")

    class NbdTransport(DatastoreHttpTransport):
        name = "nbd-test"

    register_transport("nbd-test", NbdTransport)
    assert isinstance(get_transport("nbd-test"), NbdTransport)
