"""XFS (v4 and v5) through ``dissect.xfs``.

dissect parses the superblock, allocation groups, inodes, the three directory formats and the bmap
(extent list or B+tree). The file layout is assembled here from the parsed bmap records because dissect's
run list ignores their "unwritten" flag: a preallocated extent must read as zeros, not as whatever its
blocks held before. Block numbers in the bmap are per allocation group (AG number in the high bits), so
they are turned into linear block numbers with the superblock's AG geometry, as dissect does.

Refused rather than misread: files on a realtime device (not part of this volume) and directory blocks
larger than filesystem blocks (``-n size=``), which dissect's directory reader does not handle.
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Hashable, Iterator

from app.files import _dissect as d
from app.files.drivers.base import Node, find_by_scan, posix_kind, utc_from_ns
from app.files.errors import CorruptFilesystem, UnsupportedFilesystem
from app.files.layout import Layout, inline_layout, layout_from_blocks
from app.files.models import Entry, EntryType, FsType
from app.files.source import ByteSource, SourceStream

_c = d.c_xfs
_FORMAT = _c.xfs_dinode_fmt


class XfsDriver:
    fstype = FsType.XFS

    def __init__(self, source: ByteSource, lock: threading.RLock) -> None:
        self._source = source
        fs = d.XFS(SourceStream(source))
        if fs.sb.sb_dirblklog:
            raise UnsupportedFilesystem(
                "this XFS filesystem uses directory blocks larger than its blocks, which cannot be read yet"
            )
        self._fs = fs
        self.label: str | None = fs.name or None
        self._block_size: int = fs.block_size
        self._blocks: int = fs.sb.sb_dblocks
        self._ag_blocks: int = fs.sb.sb_agblocks
        self._ag_log: int = fs.sb.sb_agblklog

    def root(self) -> Node:
        return self._fs.root

    def key(self, node: Node) -> Hashable:
        return int(node.inum)

    def kind(self, node: Node) -> EntryType:
        return posix_kind(node.inode.di_mode)

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        for child in node.iterdir():
            name: str = child.filename
            if name not in (".", ".."):
                yield name, child

    def find(self, node: Node, name: str) -> Node | None:
        return find_by_scan(self, node, name)

    def entry(self, node: Node, name: str, path: str) -> Entry:
        inode = node.inode
        kind = posix_kind(inode.di_mode)
        return Entry(
            path=path,
            name=name,
            type=kind,
            size=int(node.size) if kind in (EntryType.FILE, EntryType.SYMLINK) else 0,
            mtime=utc_from_ns(node.mtime_ns),
            mode=stat.S_IMODE(inode.di_mode),
            uid=int(inode.di_uid),
            gid=int(inode.di_gid),
            symlink_target=str(node.link) if kind is EntryType.SYMLINK else None,
        )

    def layout(self, node: Node, path: str) -> Layout:
        inode = node.inode
        what = f"'{path}'"
        if inode.di_flags & _c.XFS_DIFLAG_REALTIME:
            raise UnsupportedFilesystem(
                f"{what} is stored on the filesystem's realtime device, not on this volume"
            )
        size = int(node.size)
        if inode.di_format == _FORMAT.XFS_DINODE_FMT_LOCAL:
            data = node.datafork().read(size)
            if len(data) != size:
                raise CorruptFilesystem(f"{what}: {size} bytes of inline data announced, {len(data)} found")
            return inline_layout(data)
        if inode.di_format not in (_FORMAT.XFS_DINODE_FMT_EXTENTS, _FORMAT.XFS_DINODE_FMT_BTREE):
            raise CorruptFilesystem(f"{what}: a regular file with data fork format {int(inode.di_format)}")
        runs = list(self._runs(node, what))
        return layout_from_blocks(self._source, size, self._block_size, runs, what=what)

    def _runs(self, node: Node, what: str) -> Iterator[tuple[int, int, int | None]]:
        for offset, block, count, unwritten in node._iter_blocks():
            ag, ag_block = d.xfs_fsb_to_bb(block, self._ag_log)
            linear = ag * self._ag_blocks + ag_block
            if not unwritten and linear + count > self._blocks:
                raise CorruptFilesystem(f"{what}: an extent points beyond the end of the filesystem")
            yield offset, count, None if unwritten else linear
