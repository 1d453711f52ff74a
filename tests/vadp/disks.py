"""Putting real data on a simulator VM's disk, independently of :mod:`app.vadp`.

The simulator creates disks with a capacity of 1 MiB and an *empty* ``-flat.vmdk``. These
helpers grow a disk (ReconfigVM, through pyVmomi directly), generate content (a real ext4
filesystem made with ``mke2fs -d`` when e2fsprogs is installed, random bytes otherwise) and
write it into the flat file with an HTTP PUT to ``/folder``: the "expected" side of the disk
tests, sharing no code with the transport under test.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pyVmomi import vim

from tests.support.vcsim import VcsimServer
from tests.vadp import reference
from tests.vadp.reference import datacenter_of, find, props, wait_for_task

MIB = 1 << 20
MKE2FS = shutil.which("mke2fs") or next(
    (p for p in ("/usr/sbin/mke2fs", "/sbin/mke2fs") if os.access(p, os.X_OK)), None
)


@dataclass(frozen=True)
class DiskContent:
    vm_name: str
    disk_key: int
    file_name: str  # "[LocalDS_0] VM/disk1.vmdk"
    data: bytes
    kind: str  # "ext4" or "random"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def folder_url(server: VcsimServer, datacenter: str, datastore_path: str) -> tuple[str, dict[str, str]]:
    """The /folder URL and query of a ``[datastore] path`` file."""
    name, _, path = datastore_path[1:].partition("]")
    return f"http://{server.host}:{server.port}/folder/{path.strip()}", {"dcPath": datacenter, "dsName": name}


def flat_name(descriptor: str) -> str:
    return descriptor[: -len(".vmdk")] + "-flat.vmdk"


def put_file(server: VcsimServer, datacenter: str, datastore_path: str, data: bytes) -> None:
    url, params = folder_url(server, datacenter, datastore_path)
    httpx.put(url, params=params, content=data, timeout=30).raise_for_status()


def get_file(server: VcsimServer, datacenter: str, datastore_path: str) -> bytes:
    url, params = folder_url(server, datacenter, datastore_path)
    response = httpx.get(url, params=params, timeout=30)
    response.raise_for_status()
    return response.content


def ext4_image(size: int, seed: int) -> bytes:
    """A real ext4 filesystem of ``size`` bytes holding a few generated files."""
    assert MKE2FS is not None
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="vadp-ext4-") as tmp:
        root = Path(tmp) / "root"
        (root / "etc").mkdir(parents=True)
        (root / "etc" / "hostname").write_text(f"vm-{seed}\n")
        (root / "data").mkdir()
        for index in range(4):
            (root / "data" / f"blob{index}.bin").write_bytes(rng.randbytes(min(size // 16, 256 * 1024)))
        image = Path(tmp) / "disk.img"
        subprocess.run(
            [
                MKE2FS,
                "-q",
                "-F",
                "-t",
                "ext4",
                "-E",
                "root_owner=0:0",
                "-U",
                f"{seed:08d}-0000-4000-8000-000000000000",
                "-d",
                str(root),
                str(image),
                f"{size // 1024}k",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "E2FSPROGS_FAKE_TIME": "1700000000"},
        )
        return image.read_bytes()


def generated_content(size: int, seed: int, kind: str = "ext4") -> tuple[bytes, str]:
    """``size`` bytes of disk content: ext4 if possible (and asked for), else random."""
    if kind == "ext4" and MKE2FS is not None and size >= 4 * MIB:
        return ext4_image(size, seed), "ext4"
    rng = random.Random(seed)
    piece = 16 * 1024 * 1024  # randbytes of a whole large disk overflows a C int
    return b"".join(rng.randbytes(min(piece, size - start)) for start in range(0, size, piece)), "random"


def disk_of(si: Any, vm: Any, key: int | None = None) -> Any:
    devices = props(si, vm, "config.hardware.device")["config.hardware.device"]
    disks = [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)]
    return disks[0] if key is None else next(d for d in disks if d.key == key)


def grow_disk(si: Any, vm: Any, disk: Any, size: int) -> None:
    """Set a disk's capacity to ``size`` bytes with ReconfigVM (the flat file is not touched)."""
    disk.capacityInKB = size // 1024
    disk.capacityInBytes = size
    change = vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)
    wait_for_task(si, vm.ReconfigVM_Task(vim.vm.ConfigSpec(deviceChange=[change])))


def fill_disk(
    server: VcsimServer, vm_name: str, size: int, seed: int = 1, kind: str = "ext4", key: int | None = None
) -> DiskContent:
    """Grow ``vm_name``'s disk to ``size`` bytes and write generated content into it."""
    with reference.session(server) as si:
        vm = find(si, vim.VirtualMachine, vm_name)
        disk = disk_of(si, vm, key)
        if disk.capacityInKB * 1024 != size:
            grow_disk(si, vm, disk, size)
        datacenter = datacenter_of(si, vm)
    assert datacenter is not None
    data, made = generated_content(size, seed, kind)
    put_file(server, datacenter, flat_name(disk.backing.fileName), data)
    return DiskContent(vm_name, disk.key, disk.backing.fileName, data, made)


def read_back(server: VcsimServer, datacenter: str, descriptor: str) -> bytes:
    """The whole flat file of a disk, downloaded with one plain GET."""
    return get_file(server, datacenter, flat_name(descriptor))
