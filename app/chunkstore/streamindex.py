"""The chunk index of a stream: its chunk ids and lengths in order, split into segment objects.

Content-defined chunks have varying lengths, so unlike a disk index an entry carries its length (the
offset of chunk ``i`` is the sum of the lengths before it). A dump has no size known in advance and may
be far larger than memory, so the index is written as it grows, one segment object per
``SEGMENT_ENTRIES`` entries (2.25 MiB raw, 32 GiB of stream at 512 KiB chunks): backup and restore hold
one segment at a time, never the index of the whole stream.

Serialized segment (little endian)::

    magic "VMRSIX01" | u32 flags | u32 count | u64 size | body

``body`` is the ``count`` ids (32 bytes each) followed by the ``count`` lengths (u32 each), zstd-
compressed when flags & 1 and smaller that way. Integrity comes from the manifest (BLAKE3 of the stored
object) and, in encrypted repositories, from AES-GCM sealing, like disk indexes.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Iterator

import zstandard

from app.chunkstore.ids import ID_SIZE
from app.chunkstore.index import IndexFormatError

MAGIC = b"VMRSIX01"
_HEAD = struct.Struct("<8sIIQ")
_FLAG_ZSTD = 0x01
SEGMENT_ENTRIES = 1 << 16
_LEN = struct.Struct("<I")


class StreamSegmentIndex:
    """The entries of one segment: flat ids (32 bytes each) and their lengths."""

    __slots__ = ("_ids", "_lengths", "size")

    def __init__(self, ids: bytes | bytearray, lengths: array[int]) -> None:
        if len(ids) != len(lengths) * ID_SIZE:
            raise ValueError(f"{len(ids)} bytes of ids for {len(lengths)} lengths")
        self._ids = ids
        self._lengths = lengths
        self.size = sum(lengths)

    def __len__(self) -> int:
        return len(self._lengths)

    def __iter__(self) -> Iterator[tuple[bytes, int]]:
        ids = self._ids
        for i, length in enumerate(self._lengths):
            yield bytes(ids[i * ID_SIZE : (i + 1) * ID_SIZE]), length

    def unique_ids(self) -> set[bytes]:
        ids = self._ids
        return {bytes(ids[start : start + ID_SIZE]) for start in range(0, len(ids), ID_SIZE)}

    def to_bytes(self) -> bytes:
        lengths = array("I", self._lengths)
        if sys.byteorder == "big":  # pragma: no cover - every platform we run on is little endian
            lengths.byteswap()
        raw = bytes(self._ids) + lengths.tobytes()
        body, flags = raw, 0
        compressed = zstandard.ZstdCompressor(level=1).compress(raw)
        if len(compressed) < len(raw):
            body, flags = compressed, _FLAG_ZSTD
        return _HEAD.pack(MAGIC, flags, len(self), self.size) + body

    @classmethod
    def from_bytes(cls, data: bytes) -> StreamSegmentIndex:
        if len(data) < _HEAD.size:
            raise IndexFormatError("truncated stream index")
        magic, flags, count, size = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise IndexFormatError("not a stream index")
        expected = count * (ID_SIZE + _LEN.size)
        body = memoryview(data)[_HEAD.size :]
        if flags & _FLAG_ZSTD:
            try:
                raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=expected)
            except zstandard.ZstdError as exc:
                raise IndexFormatError(f"cannot decompress stream index: {exc}") from None
        else:
            raw = bytes(body)
        if len(raw) != expected:
            raise IndexFormatError(f"stream index holds {len(raw)} bytes, expected {expected}")
        lengths = array("I")
        if lengths.itemsize != _LEN.size:  # pragma: no cover - C unsigned int is 4 bytes everywhere we run
            raise RuntimeError("array('I') is not 4 bytes on this platform")
        lengths.frombytes(raw[count * ID_SIZE :])
        if sys.byteorder == "big":  # pragma: no cover
            lengths.byteswap()
        segment = cls(raw[: count * ID_SIZE], lengths)
        if segment.size != size or 0 in lengths:
            raise IndexFormatError("inconsistent stream index")
        return segment


class SegmentBuilder:
    """Accumulates entries until a segment is full; the caller writes it and starts the next one."""

    __slots__ = ("_ids", "_lengths", "limit")

    def __init__(self, limit: int = SEGMENT_ENTRIES) -> None:
        if limit < 1:
            raise ValueError("a segment holds at least one entry")
        self.limit = limit
        self._ids = bytearray()
        self._lengths = array("I")

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def full(self) -> bool:
        return len(self._lengths) >= self.limit

    def append(self, chunk_id: bytes, length: int) -> None:
        if len(chunk_id) != ID_SIZE or not 0 < length < 1 << 32:
            raise ValueError("bad stream index entry")
        self._ids += chunk_id
        self._lengths.append(length)

    def take(self) -> StreamSegmentIndex:
        """The entries so far as a segment; the builder starts empty again."""
        segment = StreamSegmentIndex(bytes(self._ids), self._lengths)
        self._ids = bytearray()
        self._lengths = array("I")
        return segment
