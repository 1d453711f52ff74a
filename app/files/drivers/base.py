"""The protocol every filesystem driver implements, and the helpers they share.

A driver is the thin layer between one dissect parser and the ``Filesystem`` handle: it knows how its
filesystem names, lists and describes things and where a file's bytes are, and nothing else. Paths,
locking, sorting, pagination, caching and walking live once in ``app/files/filesystem.py``. Drivers are
only ever called under their handle's lock (dissect objects share one stream position), and what they
return (``Entry``, ``Layout``) is plain data; nodes (dissect objects) never leave the handle.
"""

from __future__ import annotations

import stat
from collections.abc import Hashable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from app.files.layout import Layout
from app.files.models import Entry, EntryType, FsType

Node = Any  # a driver's own handle on a file or directory (a dissect object); never leaves the package

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_POSIX_TYPES = {stat.S_IFREG: EntryType.FILE, stat.S_IFDIR: EntryType.DIR, stat.S_IFLNK: EntryType.SYMLINK}


class Driver(Protocol):
    """One opened filesystem. Every method runs under the handle's lock."""

    fstype: FsType
    label: str | None

    def root(self) -> Node:
        """The root directory."""
        ...

    def key(self, node: Node) -> Hashable:
        """What identifies a directory (inode or record number), to notice a damaged tree that loops."""
        ...

    def kind(self, node: Node) -> EntryType:
        """What ``node`` is; only ``DIR`` nodes are listed or gone through, symbolic links never."""
        ...

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        """The visible names in directory ``node`` (no ``.``/``..``, no hidden metadata files), any order."""
        ...

    def find(self, node: Node, name: str) -> Node | None:
        """The child of directory ``node`` named exactly ``name`` (case included), if visible."""
        ...

    def entry(self, node: Node, name: str, path: str) -> Entry:
        """What a listing says about ``node``, found as ``name`` at ``path``."""
        ...

    def layout(self, node: Node, path: str) -> Layout:
        """Where the bytes of the regular file ``node`` are; raises ``UnsupportedFilesystem`` for content
        the reader cannot return faithfully (encrypted, compressed by a filter it does not know)."""
        ...


def find_by_scan(driver: Driver, node: Node, name: str) -> Node | None:
    """``Driver.find`` by going through the directory: for filesystems whose index dissect cannot search."""
    for child_name, child in driver.children(node):
        if child_name == name:
            return child
    return None


def utc_from_ns(ns: int | None) -> datetime | None:
    """An aware UTC datetime from nanoseconds since the epoch (microsecond precision); None if absurd."""
    if ns is None:
        return None
    try:
        return _EPOCH + timedelta(microseconds=ns // 1000)
    except OverflowError:
        return None


def posix_kind(mode: int) -> EntryType:
    """The entry type of a POSIX ``st_mode``: devices, FIFOs and sockets are ``OTHER``."""
    return _POSIX_TYPES.get(stat.S_IFMT(mode), EntryType.OTHER)
