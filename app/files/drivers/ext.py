"""ext2, ext3 and ext4 through ``dissect.extfs``.

dissect parses the superblock, group descriptors, inodes, directories and extent trees. The file layout is
assembled here from the parsed extent records rather than taken from dissect's run list, because that list
drops the logical position of unwritten (preallocated) extents and of the sparse gaps before them; and for
block-mapped (ext2/3) files it reads block 0 as an indirect block where a double or triple indirect
pointer is a hole, and maps a hole at the very end of a file to block 0. Each would return other data as
file content, so the ext2/3 block map (12 direct pointers, then single, double and triple indirect blocks
of 32-bit block numbers) is walked here too.

Refused rather than misread: ``meta_bg`` group descriptor placement beyond the first meta group (dissect
assumes the classic layout), directories with inline data, and encrypted files.
"""

from __future__ import annotations

import io
import stat
import struct
import threading
from collections.abc import Hashable, Iterator

from app.files import _dissect as d
from app.files.drivers.base import Node, find_by_scan, posix_kind, utc_from_ns
from app.files.errors import CorruptFilesystem, UnsupportedFilesystem
from app.files.layout import Layout, inline_layout, layout_from_blocks
from app.files.models import Entry, EntryType, FsType
from app.files.source import ByteSource, SourceStream

_c = d.c_ext
_UNWRITTEN = 0x8000  # an extent longer than this is unwritten (preallocated): it reads as zeros
_DIRECT = 12  # direct block pointers in an inode's block map


class ExtDriver:
    def __init__(self, source: ByteSource, lock: threading.RLock) -> None:
        self._source = source
        self._stream = SourceStream(source)
        fs = d.ExtFS(self._stream)
        sb = fs.sb
        if sb.s_feature_incompat & _c.EXT2_FEATURE_INCOMPAT_META_BG:
            per_block = fs.block_size // fs._group_desc_size
            if sb.s_first_meta_bg * per_block < fs.groups_count:
                raise UnsupportedFilesystem(
                    "this ext filesystem places its group descriptors with meta_bg, which cannot be read yet"
                )
        self._fs = fs
        self.fstype = {d.EXT2: FsType.EXT2, d.EXT3: FsType.EXT3}.get(fs.type, FsType.EXT4)
        self.label: str | None = fs.volume_name or None
        self._block_size: int = fs.block_size
        self._blocks: int = fs.block_count

    def root(self) -> Node:
        return self._fs.root

    def key(self, node: Node) -> Hashable:
        return int(node.inum)

    def kind(self, node: Node) -> EntryType:
        return posix_kind(node.inode.i_mode)

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        if node.inode.i_flags & _c.EXT4_INLINE_DATA_FL:
            raise UnsupportedFilesystem(
                "this directory keeps its entries inline (ext4 inline_data), which cannot be listed yet"
            )
        for child in node.iterdir():
            name: str = child.filename
            if name not in (".", ".."):
                yield name, child

    def find(self, node: Node, name: str) -> Node | None:
        return find_by_scan(self, node, name)

    def entry(self, node: Node, name: str, path: str) -> Entry:
        inode = node.inode
        kind = posix_kind(inode.i_mode)
        target = self._link(node, path) if kind is EntryType.SYMLINK else None
        return Entry(
            path=path,
            name=name,
            type=kind,
            size=int(node.size) if kind in (EntryType.FILE, EntryType.SYMLINK) else 0,
            mtime=utc_from_ns(node.mtime_ns),
            mode=stat.S_IMODE(inode.i_mode),
            uid=inode.i_uid | (inode.i_uid_high << 16),
            gid=inode.i_gid | (inode.i_gid_high << 16),
            symlink_target=target,
        )

    def layout(self, node: Node, path: str) -> Layout:
        inode = node.inode
        what = f"'{path}'"
        if inode.i_flags & _c.EXT4_ENCRYPT_FL:
            raise UnsupportedFilesystem(
                f"{what} is encrypted (ext4 encryption); it cannot be read without its key"
            )
        size = int(node.size)
        if inode.i_flags & _c.EXT4_INLINE_DATA_FL:
            return inline_layout(self._inline(node, size, what))
        if inode.i_flags & _c.EXT4_EXTENTS_FL:
            runs = list(self._extent_runs(node, what))
        else:
            runs = list(self._mapped_runs(node, size, what))
        return layout_from_blocks(self._source, size, self._block_size, runs, what=what)

    # -- content -----------------------------------------------------------------------------------

    def _link(self, node: Node, path: str) -> str:
        if node.inode.i_flags & _c.EXT4_INLINE_DATA_FL:
            return self._inline(node, int(node.size), f"'{path}'").decode("utf-8", "surrogateescape")
        return str(node.link)

    def _inline(self, node: Node, size: int, what: str) -> bytes:
        """Inline data: the first 60 bytes in the inode's block array, the rest in xattr ``system.data``."""
        data = bytes(node.inode.i_block)
        if size > len(data):
            rest = next((x.value for x in node.xattr if x.name == "system.data"), None)
            if rest is None:
                raise CorruptFilesystem(
                    f"{what}: its inline data continues in an extended attribute that is missing"
                )
            data += bytes(rest)
        if len(data) < size:
            raise CorruptFilesystem(f"{what}: {size} bytes of inline data announced, {len(data)} found")
        return data[:size]

    def _extent_runs(self, node: Node, what: str) -> Iterator[tuple[int, int, int | None]]:
        for extent in d.ext_parse_extents(node, io.BytesIO(node.inode.i_block)):
            length = extent.ee_len
            unwritten = length > _UNWRITTEN
            if unwritten:
                length -= _UNWRITTEN
            start = (extent.ee_start_hi << 32) | extent.ee_start_lo
            if not unwritten and start + length > self._blocks:
                raise CorruptFilesystem(f"{what}: an extent points beyond the end of the filesystem")
            yield extent.ee_block, length, None if unwritten else start

    def _mapped_runs(self, node: Node, size: int, what: str) -> Iterator[tuple[int, int, int | None]]:
        """The ext2/3 block map: holes (zero pointers) at any level become holes of the span they cover."""
        count = -(-size // self._block_size)
        pointers = struct.unpack("<15I", bytes(node.inode.i_block))
        per_block = self._block_size // 4
        for index in range(min(_DIRECT, count)):
            yield from self._walk(pointers[index], 0, index, count, what)
        start = _DIRECT
        for level in (1, 2, 3):
            if start >= count:
                return
            yield from self._walk(pointers[_DIRECT + level - 1], level, start, count, what)
            start += per_block**level

    def _walk(
        self, pointer: int, level: int, logical: int, count: int, what: str
    ) -> Iterator[tuple[int, int, int | None]]:
        per_block = self._block_size // 4
        if pointer == 0:
            yield logical, min(per_block**level, count - logical), None
            return
        if pointer >= self._blocks:
            raise CorruptFilesystem(f"{what}: its block map points beyond the end of the filesystem")
        if level == 0:
            yield logical, 1, pointer
            return
        block = self._stream.read_at(pointer * self._block_size, self._block_size)
        if len(block) != self._block_size:
            raise CorruptFilesystem(f"{what}: an indirect block lies beyond the end of the volume")
        span = per_block ** (level - 1)
        for index, child in enumerate(struct.unpack(f"<{per_block}I", block)):
            start = logical + index * span
            if start >= count:
                return
            yield from self._walk(child, level - 1, start, count, what)
