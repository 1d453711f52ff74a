"""File-level browsing of one disk of a backup: its volumes, and the filesystems on them.

    reader = DiskImageReader(repo, repo.read_index(point.disk("2000")))    # or FileSource("disk.img")
    browser = DiskBrowser(reader)
    for volume in browser.volumes(): ...                                  # partitions, LVs, whole disk
    fs = browser.filesystem("1")                                          # or "lvm:vg0/root"
    page = fs.list("/etc", limit=100)                                     # DirectoryPage
    with fs.open("/etc/hostname") as f: data = f.read()                   # FileStream
    for entry in fs.walk("/home"): ...                                    # for archives

Everything is lazy: volumes are discovered on the first call that needs them (the partition table and
the first KiB of each volume), a filesystem is opened on first use and kept for the browser's lifetime,
and nothing more of the disk is read than the calls ask for. A browser is safe to share between threads:
discovery and opening run under the browser's lock, each filesystem has its own (see ``filesystem.py``).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from app.files.drivers import open_driver
from app.files.errors import (
    CorruptFilesystem,
    FilesError,
    UnsupportedFilesystem,
    VolumeNotFound,
    translate,
)
from app.files.filesystem import Filesystem
from app.files.lvm import logical_volumes
from app.files.models import FsType, Volume
from app.files.source import ByteSource
from app.files.volumes import Found, partitions


class DiskBrowser:
    """The volumes and filesystems of the disk ``source`` (a ``ByteSource``)."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._found: dict[str, Found] | None = None
        self._filesystems: dict[str, Filesystem] = {}

    def volumes(self) -> list[Volume]:
        """Partitions (or the whole disk) in partition order, then logical volumes by id."""
        return [found.volume for found in self._discover().values()]

    def volume(self, volume_id: str) -> Volume:
        return self._lookup(volume_id).volume

    def filesystem(self, volume_id: str) -> Filesystem:
        """The filesystem on volume ``volume_id``, opened on first use and then shared."""
        found = self._lookup(volume_id)
        with self._lock:
            opened = self._filesystems.get(found.volume.id)
            if opened is None:
                opened = self._open(found)
                self._filesystems[found.volume.id] = opened
            return opened

    # -- internals ---------------------------------------------------------------------------------

    def _discover(self) -> dict[str, Found]:
        with self._lock:
            if self._found is None:
                with translate("reading the disk's partition table"):
                    found = partitions(self._source)
                    physical = [f for f in found if f.volume.filesystem is FsType.LVM2]
                    lvs, problems = logical_volumes(self._source, physical) if physical else ([], {})
                for index, item in enumerate(found):
                    if item.volume.id in problems:
                        volume = replace(item.volume, problem=problems[item.volume.id])
                        found[index] = Found(volume, item.source, item.detection)
                self._found = {item.volume.id: item for item in [*found, *lvs]}
            return self._found

    def _lookup(self, volume_id: str) -> Found:
        found = self._discover()
        item = found.get(volume_id) if isinstance(volume_id, str) else None
        if item is None:
            known = ", ".join(found) or "none"
            raise VolumeNotFound(f"the disk has no volume '{volume_id}' (its volumes: {known})")
        return item

    def _open(self, found: Found) -> Filesystem:
        volume = found.volume
        label = f"volume {volume.id}"
        if found.detection.problem is not None:
            kind = UnsupportedFilesystem if found.detection.unsupported else CorruptFilesystem
            raise kind(f"{label} cannot be browsed: {found.detection.problem}")
        if volume.problem is not None:
            raise UnsupportedFilesystem(f"{label} cannot be browsed: {volume.problem}")
        if volume.filesystem is FsType.LVM2:
            lvs = [key for key in self._found or {} if key.startswith("lvm:")]
            hint = f" ({', '.join(lvs)})" if lvs else ""
            raise UnsupportedFilesystem(
                f"{label} is an LVM2 physical volume: browse its logical volumes{hint} instead"
            )
        if volume.filesystem is FsType.SWAP:
            raise UnsupportedFilesystem(f"{label} is swap space: it holds no files")
        lock = threading.RLock()
        try:
            with translate(f"opening the {volume.filesystem.value} filesystem on {label}"):
                driver = (
                    open_driver(volume.filesystem, found.source, lock) if found.source is not None else None
                )
        except FilesError as exc:
            if label in exc.message:
                raise
            raise type(exc)(f"{label}: {exc.message}") from exc
        if driver is None:
            raise UnsupportedFilesystem(
                f"no filesystem that can be browsed was found on {label} (ext2/3/4, XFS, NTFS and FAT can be)"
            )
        return Filesystem(volume, driver, lock)
