"""The chunk index of one disk: the ordered list of its chunk ids, in a compact binary object.

Entry ``i`` is the 32-byte id of the chunk covering ``[i * chunk_size, (i + 1) * chunk_size)`` (the last
one trimmed to the disk size), or ``ZERO_ID`` for an all-zero chunk that was never stored. A 2 TiB disk
in 4 MiB chunks is 512 Ki entries = 16 MiB, which is why this is not JSON.

Serialized form (little endian)::

    magic "VMRIDX01" | u32 chunk_size | u32 flags | u64 disk_size | u64 count | body

``body`` is ``count * 32`` bytes of ids, zstd-compressed when flags & 1 (runs of zero sentinels in sparse
disks compress to almost nothing; random ids are left raw). Integrity comes from outside: the manifest
records the BLAKE3 of the stored object, and encrypted repositories seal it with AES-GCM.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import zstandard

from app.chunkstore.ids import ID_SIZE, ZERO_ID

MAGIC = b"VMRIDX01"
_HEAD = struct.Struct("<8sIIQQ")
_FLAG_ZSTD = 0x01


class IndexFormatError(ValueError):
    """The bytes are not a valid serialized index."""


def chunk_count(disk_size: int, chunk_size: int) -> int:
    return -(-disk_size // chunk_size)


class DiskIndex:
    """Immutable-by-convention list of chunk ids for one disk, stored flat (32 bytes per entry)."""

    __slots__ = ("_ids", "chunk_size", "disk_size")

    def __init__(self, disk_size: int, chunk_size: int, ids: bytes | bytearray | None = None) -> None:
        if disk_size < 0 or chunk_size <= 0:
            raise ValueError("disk_size must be >= 0 and chunk_size > 0")
        count = chunk_count(disk_size, chunk_size)
        if ids is None:
            ids = bytes(count * ID_SIZE)
        if len(ids) != count * ID_SIZE:
            raise ValueError(f"{len(ids)} bytes of ids for {count} chunks")
        self.disk_size = disk_size
        self.chunk_size = chunk_size
        self._ids = ids

    def __len__(self) -> int:
        return len(self._ids) // ID_SIZE

    def __repr__(self) -> str:
        return f"DiskIndex(disk_size={self.disk_size}, chunk_size={self.chunk_size}, chunks={len(self)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskIndex):
            return NotImplemented
        return (
            self.disk_size == other.disk_size
            and self.chunk_size == other.chunk_size
            and self._ids == other._ids
        )

    __hash__ = None  # type: ignore[assignment]

    def chunk_id(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return bytes(self._ids[i * ID_SIZE : (i + 1) * ID_SIZE])

    def is_zero(self, i: int) -> bool:
        return self.chunk_id(i) == ZERO_ID

    def chunk_offset(self, i: int) -> int:
        return i * self.chunk_size

    def chunk_length(self, i: int) -> int:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return min(self.chunk_size, self.disk_size - i * self.chunk_size)

    def ids_view(self) -> memoryview:
        """Read-only view of the flat id array (32 bytes per entry), for bulk operations."""
        return memoryview(self._ids).toreadonly()

    def __iter__(self) -> Iterator[bytes]:
        ids = self._ids
        for start in range(0, len(ids), ID_SIZE):
            yield bytes(ids[start : start + ID_SIZE])

    def unique_ids(self) -> set[bytes]:
        """Distinct stored chunk ids (the zero sentinel excluded)."""
        found = set(self)
        found.discard(ZERO_ID)
        return found

    def to_bytes(self) -> bytes:
        body: bytes | bytearray = self._ids
        flags = 0
        compressed = zstandard.ZstdCompressor(level=1).compress(self._ids)
        if len(compressed) < len(self._ids):
            body, flags = compressed, _FLAG_ZSTD
        head = _HEAD.pack(MAGIC, self.chunk_size, flags, self.disk_size, len(self))
        return head + body

    @classmethod
    def from_bytes(cls, data: bytes) -> DiskIndex:
        if len(data) < _HEAD.size:
            raise IndexFormatError("truncated index")
        magic, chunk_size, flags, disk_size, count = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise IndexFormatError("not a chunk index")
        if chunk_size == 0 or count != chunk_count(disk_size, chunk_size):
            raise IndexFormatError("inconsistent index header")
        body = memoryview(data)[_HEAD.size :]
        expected = count * ID_SIZE
        if flags & _FLAG_ZSTD:
            try:
                ids = zstandard.ZstdDecompressor().decompress(body, max_output_size=expected)
            except zstandard.ZstdError as exc:
                raise IndexFormatError(f"cannot decompress index: {exc}") from None
        else:
            ids = bytes(body)
        if len(ids) != expected:
            raise IndexFormatError(f"index holds {len(ids)} bytes of ids, expected {expected}")
        return cls(disk_size, chunk_size, ids)
