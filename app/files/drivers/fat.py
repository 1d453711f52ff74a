"""FAT12, FAT16 and FAT32 through ``dissect.fat``.

dissect parses the boot sector, the FAT, directory entries and long names. Decisions taken here:

* Cluster chains are followed with a bound: a file needs exactly ``ceil(size / cluster size)`` clusters
  and a directory at most as many as the volume has, so a damaged FAT whose chain loops is reported
  instead of read forever (dissect's own chain walk has no bound); a chain that visits a cluster twice or
  ends too early is damage too, since reading it would repeat or drop data.
* Names without a long name are the 8.3 names with the lower-case flags Windows NT sets (``readme.txt``
  is stored as ``README  TXT`` plus two flag bits), so they read as Windows and Linux show them.
* The volume label entry, ``.`` and ``..`` are not listed.
* FAT records modification times in the local time of whoever wrote the file, with no zone; they are
  returned as if UTC (as Linux mounts FAT by default), and a date FAT cannot hold is returned as None.
* ``attributes`` are the directory entry's attribute bits, which are the Windows ``FILE_ATTRIBUTE_*``
  bits (read-only, hidden, system, directory, archive).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from datetime import UTC, datetime
from itertools import islice

from app.files import _dissect as d
from app.files.detect import fat_type
from app.files.drivers.base import Node, find_by_scan
from app.files.errors import CorruptFilesystem
from app.files.layout import Layout, inline_layout, layout_from_blocks
from app.files.models import Entry, EntryType
from app.files.source import ByteSource, SourceStream

_DIRECTORY = 0x10
_LOWER_BASE = 0x08
_LOWER_EXTENSION = 0x10


class FatDriver:
    def __init__(self, source: ByteSource, lock: threading.RLock) -> None:
        self._source = source
        fs = d.FATFS(SourceStream(source))
        self._fs = fs
        self.fstype = fat_type(fs)
        label = fs.volume_label.strip()
        self.label: str | None = None if label in ("", "NO NAME") else label
        self._cluster_size: int = fs.cluster_size
        self._clusters: int = (fs.total_sectors - fs.first_data_sector) // fs.bpb.BPB_SecPerClus
        self._data_offset: int = fs.first_data_sector * fs.sector_size

    def root(self) -> Node:
        return self._fs.root

    def key(self, node: Node) -> Hashable:
        return "root" if node is self._fs.root else int(node.cluster)

    def kind(self, node: Node) -> EntryType:
        return EntryType.DIR if node.is_directory() else EntryType.FILE

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        self._bound_chain(node)
        for child in node.iterdir():
            if child.is_volume_id() and not child.is_directory():
                continue
            name = self._name(child)
            if name not in (".", ".."):
                yield name, child

    def find(self, node: Node, name: str) -> Node | None:
        return find_by_scan(self, node, name)

    def entry(self, node: Node, name: str, path: str) -> Entry:
        if node is self._fs.root:  # the root has no directory entry of its own
            return Entry(path=path, name=name, type=EntryType.DIR, size=0, mtime=None, attributes=_DIRECTORY)
        dirent = node.dirent
        directory = node.is_directory()
        return Entry(
            path=path,
            name=name,
            type=EntryType.DIR if directory else EntryType.FILE,
            size=0 if directory else int(dirent.DIR_FileSize),
            mtime=self._mtime(dirent.DIR_WrtDate, dirent.DIR_WrtTime),
            attributes=int(dirent.DIR_Attr),
        )

    def layout(self, node: Node, path: str) -> Layout:
        what = f"'{path}'"
        size = int(node.dirent.DIR_FileSize)
        if size == 0:
            return inline_layout(b"")
        needed = -(-size // self._cluster_size)
        chain = self._chain(int(node.cluster), needed, what)
        if len(chain) < needed:
            raise CorruptFilesystem(f"{what}: its cluster chain ends after {len(chain)} of {needed} clusters")
        runs = ((number, 1, cluster - 2) for number, cluster in enumerate(chain))
        return layout_from_blocks(
            self._source, size, self._cluster_size, runs, what=what, base=self._data_offset
        )

    # -- helpers -------------------------------------------------------------------------------------

    def _chain(self, first: int, limit: int, what: str) -> list[int]:
        """Up to ``limit`` clusters of the chain starting at ``first``, each checked to exist."""
        chain = list(islice(self._fs.fat.chain(first), limit))
        for cluster in chain:
            if not 2 <= cluster < self._clusters + 2:
                raise CorruptFilesystem(
                    f"{what}: its cluster chain refers to cluster {cluster}, which does not exist"
                )
        if len(set(chain)) != len(chain):
            raise CorruptFilesystem(f"{what}: its cluster chain loops")
        return chain

    def _bound_chain(self, node: Node) -> None:
        """Give a directory the run list of its chain, followed with a bound, before dissect reads it."""
        if node._runlist is not None or node.cluster in (None, 0):
            return  # already known, the fixed FAT12/16 root, or an empty directory
        chain = self._chain(int(node.cluster), self._clusters + 1, "a directory")
        runs: list[tuple[int, int]] = []
        for cluster in chain:
            if runs and runs[-1][0] + runs[-1][1] == cluster - 2:
                runs[-1] = (runs[-1][0], runs[-1][1] + 1)
            else:
                runs.append((cluster - 2, 1))
        node._runlist = runs

    def _name(self, node: Node) -> str:
        if node.ldirents:
            return str(node.name)
        short = str(node.short_name)
        if short in (".", ".."):
            return short
        base, dot, extension = short.partition(".")
        flags = node.dirent.DIR_NTRes
        if flags & _LOWER_BASE:
            base = base.lower()
        if flags & _LOWER_EXTENSION:
            extension = extension.lower()
        return base + dot + extension

    @staticmethod
    def _mtime(date: int, time: int) -> datetime | None:
        if not date:
            return None
        try:
            local = d.dostimestamp((date << 16) | time)
        except (ValueError, OverflowError):
            return None
        return local.replace(tzinfo=UTC)  # type: ignore[no-any-return]
