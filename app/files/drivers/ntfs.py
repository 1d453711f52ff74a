"""NTFS through ``dissect.ntfs``.

dissect parses the boot sector, MFT records and their attributes (attribute lists included), ``$I30``
index buffers, ``$Secure`` and reparse points. Decisions taken here:

* Directories are read by walking the ``$I30`` B+tree from its root (``$INDEX_ROOT``, then the index
  buffers the entries point to), not by scanning every buffer of ``$INDEX_ALLOCATION`` as dissect's
  ``iterdir`` does: freed buffers keep their old entries, so a scan lists deleted files, and it skips
  damaged buffers silently.
* DOS-only names (8.3 aliases) are not listed; the metadata files of the root (MFT records 0-15:
  ``$MFT``, ``$Bitmap``, ``$Secure``, ``$Extend``, … and the root's own ``.``) are hidden and cannot be
  opened. ``System Volume Information`` and ``$Recycle.Bin`` are ordinary directories and stay visible.
* Names are case-sensitive here (paths come from listings); a lookup first tries dissect's index search,
  which compares upper-cased names, and falls back to going through the directory.
* Times, attributes and the owner come from ``$STANDARD_INFORMATION`` (what Explorer shows), not from the
  copies in the directory index, which Windows updates lazily. The owner SID comes from ``$Secure``
  (NTFS 3) or the record's own security descriptor (NTFS 1.x).
* Symbolic links and junctions (and WSL symlinks) are ``SYMLINK`` entries with their target; WSL FIFOs,
  devices and sockets are ``OTHER``. Other reparse points (deduplicated, cloud or WOF-compressed files)
  are listed as files, but their content lives elsewhere, so opening them is refused.
* A file's layout comes from its data runs; data beyond the valid data length reads as zeros, as on
  Windows. Compressed files are read through dissect's decompressing stream (under the filesystem lock);
  EFS-encrypted files are refused.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator

from app.files import _dissect as d
from app.files.drivers.base import Node, utc_from_ns
from app.files.errors import CorruptFilesystem, UnsupportedFilesystem
from app.files.layout import Layout, inline_layout, layout_from_blocks, whole_source_layout
from app.files.models import Entry, EntryType, FsType
from app.files.source import ByteSource, LockedStreamSource, SourceStream

_A = d.ATTRIBUTE_TYPE_CODE
_TAG = d.IO_REPARSE_TAG
_ROOT = 5
_HIDDEN_BELOW = 16  # MFT records reserved for metadata files
_FILE_ATTRIBUTE_DIRECTORY = 0x10
_FILE_ATTRIBUTE_ENCRYPTED = 0x4000
_LINKS = (_TAG.SYMLINK, _TAG.MOUNT_POINT)
_WSL_SPECIAL = (_TAG.LX_FIFO, _TAG.LX_CHR, _TAG.LX_BLK, _TAG.AF_UNIX)


class NtfsDriver:
    fstype = FsType.NTFS

    def __init__(self, source: ByteSource, lock: threading.RLock) -> None:
        self._source = source
        self._lock = lock
        fs = d.NTFS(SourceStream(source))
        if fs.mft is None:
            raise CorruptFilesystem("the NTFS master file table could not be found")
        self._fs = fs
        self.label: str | None = fs.volume_name or None
        self._cluster_size: int = fs.cluster_size
        self._owners: dict[int, str | None] = {}  # security id → owner SID

    def root(self) -> Node:
        return self._fs.mft.root

    def key(self, node: Node) -> Hashable:
        return int(node.segment)

    def _tag(self, record: Node) -> int | None:
        reparse = record.attributes[_A.REPARSE_POINT]
        return int(reparse[0].tag) if reparse else None

    def kind(self, node: Node) -> EntryType:
        tag = self._tag(node)
        if tag in _LINKS or tag == _TAG.LX_SYMLINK:
            return EntryType.SYMLINK
        if tag in _WSL_SPECIAL:
            return EntryType.OTHER
        return EntryType.DIR if node.is_dir() else EntryType.FILE

    # -- directories -------------------------------------------------------------------------------

    def _index_entries(self, record: Node) -> Iterator[Node]:
        """The entries of ``record``'s ``$I30`` in key order, from the root through the live index buffers."""
        index = record.index("$I30")
        seen: set[int] = set()

        def visit(entries: Iterator[Node]) -> Iterator[Node]:
            for entry in entries:
                if entry.is_node:
                    vcn = int(entry.node_vcn)
                    if vcn in seen:
                        raise CorruptFilesystem("a directory index refers to the same index buffer twice")
                    seen.add(vcn)
                    yield from visit(index.index_buffer(vcn).entries())
                if entry.is_end:
                    return
                yield entry

        yield from visit(index.root.entries())

    def _visible(self, parent: Node, entry: Node) -> tuple[str, Node] | None:
        """Name and file reference of an index entry, or None for DOS aliases and hidden metadata."""
        name_attr = entry.attribute
        if name_attr is None or name_attr.flags == d.FILE_NAME_DOS:
            return None
        reference = entry.header.FileReference
        if parent.segment == _ROOT and d.segment_reference(reference) < _HIDDEN_BELOW:
            return None
        return str(name_attr.file_name), reference

    def _record(self, reference: Node) -> Node:
        """The record a directory entry refers to, checked to be that file still (in use, same sequence)."""
        number = int(d.segment_reference(reference))
        record = self._fs.mft.get(number)
        if not record.header.Flags & d.FILE_RECORD_SEGMENT_IN_USE:
            raise CorruptFilesystem(f"a directory lists MFT record {number}, which is not in use")
        if reference.SequenceNumber and reference.SequenceNumber != record.header.SequenceNumber:
            raise CorruptFilesystem(f"a directory lists MFT record {number}, which now holds another file")
        return record

    def children(self, node: Node) -> Iterator[tuple[str, Node]]:
        for entry in self._index_entries(node):
            visible = self._visible(node, entry)
            if visible is not None:
                yield visible[0], self._record(visible[1])

    def find(self, node: Node, name: str) -> Node | None:
        try:
            entry = node.index("$I30").search(name)
        except (KeyError, NotImplementedError):  # not there, or a collation dissect cannot search
            entry = None
        visible = self._visible(node, entry) if entry is not None else None
        if visible is None or visible[0] != name:
            visible = None
            for candidate in self._index_entries(node):
                found = self._visible(node, candidate)
                if found is not None and found[0] == name:
                    visible = found
                    break
        return None if visible is None else self._record(visible[1])

    # -- entries -----------------------------------------------------------------------------------

    def entry(self, node: Node, name: str, path: str) -> Entry:
        kind = self.kind(node)
        info = node.attributes[_A.STANDARD_INFORMATION]
        mtime = attributes = owner = None
        if info:
            mtime = utc_from_ns(info[0].last_modification_time_ns)
            attributes = int(info[0].file_attributes)
            owner = self._owner(node, int(info[0].security_id))
        if attributes is not None and node.is_dir():
            attributes |= _FILE_ATTRIBUTE_DIRECTORY  # as Windows reports directories
        target = self._target(node) if kind is EntryType.SYMLINK else None
        if kind is EntryType.FILE:
            data = node.attributes.find("", _A.DATA)
            size = int(data.size()) if data else 0
        elif target is not None:
            size = len(target.encode("utf-8", "surrogatepass"))
        else:
            size = 0
        return Entry(
            path=path,
            name=name,
            type=kind,
            size=size,
            mtime=mtime,
            owner=owner,
            attributes=attributes,
            symlink_target=target,
        )

    def _owner(self, record: Node, security_id: int) -> str | None:
        """The owner SID: from ``$Secure`` by security id, or from the record's own descriptor (NTFS 1.x,
        and files ntfs-3g writes). Only the owner is read: dissect's full parse of the access lists costs
        more than the rest of a listing entry."""
        if security_id and self._fs.secure is not None:
            if security_id not in self._owners:
                try:
                    owner = self._fs.secure.lookup(security_id).owner
                except KeyError:
                    owner = None
                self._owners[security_id] = str(owner) if owner else None
            return self._owners[security_id]
        descriptor = record.attributes.find("", _A.SECURITY_DESCRIPTOR)
        if not descriptor:
            return None
        stream = descriptor.open()
        header = d.c_ntfs._SECURITY_DESCRIPTOR_RELATIVE(stream)
        if not header.Owner:
            return None
        stream.seek(header.Owner)
        return str(d.read_sid(stream)) or None

    def _target(self, record: Node) -> str | None:
        reparse = record.attributes[_A.REPARSE_POINT][0]
        if int(reparse.tag) == _TAG.LX_SYMLINK:
            return bytes(reparse.buffer[4:]).decode("utf-8", "surrogateescape")  # after a format version
        name = reparse.print_name or reparse.substitute_name
        return str(name) if name is not None else None

    # -- content -----------------------------------------------------------------------------------

    def layout(self, node: Node, path: str) -> Layout:
        what = f"'{path}'"
        tag = self._tag(node)
        if tag is not None:
            raise UnsupportedFilesystem(
                f"{what} is a Windows reparse point (tag {tag:#010x}: deduplicated, cloud or compressed by "
                "Windows); its content is kept elsewhere and cannot be read from this backup"
            )
        info = node.attributes[_A.STANDARD_INFORMATION]
        if info and int(info[0].file_attributes) & _FILE_ATTRIBUTE_ENCRYPTED:
            raise UnsupportedFilesystem(
                f"{what} is encrypted with EFS; it cannot be read without the user's key"
            )
        data = node.attributes.find("", _A.DATA)
        if not data:
            return inline_layout(b"")
        if data[0].header.resident:
            return inline_layout(bytes(data.open().read()))
        parts = sorted((a for a in data if not a.header.resident), key=lambda a: a.header.lowest_vcn)
        first = parts[0].header
        if first.lowest_vcn != 0:
            raise CorruptFilesystem(f"{what}: the first part of its data runs is missing")
        size = int(first.size)
        if first.flags & d.ATTRIBUTE_FLAG_ENCRYPTED:
            raise UnsupportedFilesystem(
                f"{what} is encrypted with EFS; it cannot be read without the user's key"
            )
        if first.flags & d.ATTRIBUTE_FLAG_COMPRESSION_MASK:
            stream = LockedStreamSource(data.open(), size, self._lock, f"reading {path}")
            return whole_source_layout(stream, size)
        valid = int(first.header.Form.Nonresident.ValidDataLength)
        runs = list(self._runs(parts))
        return layout_from_blocks(self._source, size, self._cluster_size, runs, what=what, valid_size=valid)

    def _runs(self, parts: list[Node]) -> Iterator[tuple[int, int, int | None]]:
        for part in parts:
            vcn = int(part.header.lowest_vcn)
            for lcn, count in part.header.dataruns():
                yield vcn, count, lcn
                vcn += count
