"""Content-defined chunking (FastCDC) of byte streams, with memory bounded by the chunker, not the stream.

Disks use fixed, offset-aligned chunks because CBT speaks in offsets. A database dump or a tar stream has
no stable offsets: one row inserted near the start shifts every byte after it, and fixed chunks would all
change. Content-defined boundaries move with the content, so only the chunks around an edit change.

The boundary search is fastcdc-py's FastCDC (the 2016 paper's normalised chunking, "ronomon" gear
variant). Its C (Cython) implementation runs at ~1.3 GB/s on one core here; the pure-Python fallback it
ships does ~11 MB/s, which is too slow for any real dump (``ACCELERATED`` tells which one is in use and
the module logs a warning when it is the slow one). Boundaries depend only on the bytes and the
``CdcParams``, so the same dump chunked twice with the same parameters yields the same chunks: the
parameters are recorded with every stream so that later backups can use the same ones.

The library chunks a buffer it is given whole. ``ContentChunker`` runs it over a fixed-size window
instead and accepts a cut only when it could not depend on bytes not yet seen (the search stopped before
the end of the window), so the chunks are exactly those of chunking the whole stream at once while at
most ``buffer_size`` bytes are held.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from app.chunkstore.backend import BytesLike
from app.chunkstore.config import MAX_STREAM_CHUNK_SIZE as MAX_STREAM_CHUNK

log = logging.getLogger(__name__)

try:  # the package's own choice, made explicit: the Cython build when its wheel has one
    from fastcdc.fastcdc_cy import fastcdc_cy as _fastcdc  # type: ignore[import-untyped]

    ACCELERATED = True
except ImportError:  # pragma: no cover - depends on the installed wheel
    from fastcdc.fastcdc_py import fastcdc_py as _fastcdc  # type: ignore[import-untyped]

    ACCELERATED = False
    log.warning("fastcdc's C implementation is not available: stream chunking runs at ~10 MB/s")

ALGORITHM = "fastcdc-2016"
KiB = 1 << 10
MiB = 1 << 20
#: Window the boundary search runs over; larger windows mean fewer restarts of the search, not speed.
DEFAULT_BUFFER = 8 * MiB


class _Chunk(Protocol):
    offset: int
    length: int


_Cutter = Callable[..., Iterator[_Chunk]]


@dataclass(frozen=True, slots=True)
class CdcParams:
    """Minimum, average (target) and maximum chunk sizes in bytes.

    The defaults come from measurements on real pg_dump and mariadb-dump output (docs/benchmarks.md,
    "Stream backups"): 512 KiB average kept the new bytes of a second dump within a few percent of the
    best (256 KiB), with half the chunks (objects, index entries, dedup lookups) and better compression.
    """

    min_size: int = 128 * KiB
    avg_size: int = 512 * KiB
    max_size: int = 2 * MiB

    def __post_init__(self) -> None:
        if not 64 <= self.min_size < self.avg_size < self.max_size <= MAX_STREAM_CHUNK:
            raise ValueError(
                f"need 64 <= min < avg < max <= {MAX_STREAM_CHUNK}, got "
                f"{self.min_size}/{self.avg_size}/{self.max_size}"
            )
        # fastcdc's own bounds, which it checks with assert (gone under python -O): checked here so that
        # parameters it would refuse fail when they are made, not in the middle of a backup.
        if self.avg_size < 256:
            raise ValueError("the average chunk size must be at least 256 bytes")
        if self.max_size < 1024:
            raise ValueError("the maximum chunk size must be at least 1024 bytes")

    @classmethod
    def for_average(cls, avg_size: int) -> CdcParams:
        """The usual shape: min = avg / 4, max = avg * 4 (normalised chunking keeps most near avg)."""
        return cls(min_size=avg_size // 4, avg_size=avg_size, max_size=avg_size * 4)

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": ALGORITHM, "min": self.min_size, "avg": self.avg_size, "max": self.max_size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CdcParams:
        if data.get("algorithm") != ALGORITHM:
            raise ValueError(f"unknown chunker {data.get('algorithm')!r}")
        return cls(min_size=int(data["min"]), avg_size=int(data["avg"]), max_size=int(data["max"]))


DEFAULT_PARAMS = CdcParams()


class ContentChunker:
    """Push-style chunker: ``feed()`` bytes as they arrive, ``finish()`` at the end of the stream.

    Holds one window of ``buffer_size`` bytes (at least twice the maximum chunk size), whatever the
    stream's length. Each call returns the chunks completed by the bytes given; a caller that feeds a
    huge buffer in one call gets a list as large as that buffer back, so feed in pieces
    (``StreamBackup.write`` does).
    """

    __slots__ = ("_buf", "_cap", "_cut", "_filled", "_finished", "params")

    def __init__(
        self,
        params: CdcParams = DEFAULT_PARAMS,
        *,
        buffer_size: int = DEFAULT_BUFFER,
        cutter: _Cutter = _fastcdc,
    ) -> None:
        self.params = params
        self._cap = max(buffer_size, 2 * params.max_size)
        self._buf = bytearray(self._cap)
        self._filled = 0
        self._finished = False
        self._cut = cutter

    @property
    def buffer_size(self) -> int:
        """Bytes held by the chunker (its window): the bound the memory test checks."""
        return self._cap

    def feed(self, data: BytesLike) -> list[bytes]:
        """Take ``data``; return the chunks whose boundaries it settled, in order."""
        if self._finished:
            raise ValueError("the chunker has finished")
        view = memoryview(data).cast("B")
        out: list[bytes] = []
        pos = 0
        while pos < len(view):
            take = min(len(view) - pos, self._cap - self._filled)
            self._buf[self._filled : self._filled + take] = view[pos : pos + take]
            self._filled += take
            pos += take
            if self._filled == self._cap:
                self._emit(out, final=False)
        return out

    def finish(self) -> list[bytes]:
        """The remaining chunks (the last one may be shorter than the minimum)."""
        if self._finished:
            return []
        out: list[bytes] = []
        self._emit(out, final=True)
        self._finished = True
        return out

    def _emit(self, out: list[bytes], *, final: bool) -> None:
        filled = self._filled
        if filled == 0:
            return
        p = self.params
        view = memoryview(self._buf)[:filled]
        consumed = 0
        for chunk in self._cut(view, min_size=p.min_size, avg_size=p.avg_size, max_size=p.max_size):
            end = chunk.offset + chunk.length
            # A search that ran into the end of the window might have cut later with more bytes.
            if not final and end >= filled:
                break
            out.append(bytes(view[chunk.offset : end]))
            consumed = end
        del view
        tail = filled - consumed
        if consumed and tail:
            self._buf[:tail] = self._buf[consumed:filled]
        self._filled = tail


class _Readable(Protocol):
    def readinto(self, buffer: bytearray | memoryview, /) -> int | None: ...


StreamSource = BinaryIO | _Readable | Iterable[BytesLike]


def iter_blocks(source: StreamSource, block_size: int = MiB) -> Iterator[BytesLike]:
    """The pieces of a binary file object (``readinto``, else ``read``) or an iterable of bytes-like.

    A file object is read ``block_size`` at a time into one reused buffer (a pipe gives short reads;
    that is fine): each piece is valid only until the next one is asked for, so consumers copy what
    they keep (the chunker does). An iterable is passed through as its producer sliced it.
    """
    if block_size < 1:
        raise ValueError("block_size must be >= 1")  # a zero-size read would look like end of stream
    if isinstance(source, str | bytes | bytearray | memoryview):
        # Iterating these yields characters or ints: refuse rather than back up garbage.
        raise TypeError("pass a file object or an iterable of bytes, not a str or bytes object")
    readinto = getattr(source, "readinto", None)
    if readinto is not None:
        view = memoryview(bytearray(block_size))
        while True:
            n = readinto(view)
            if n is None:
                raise BlockingIOError("stream sources must be blocking")
            if n == 0:
                return
            yield view[:n]
    read = getattr(source, "read", None)
    if read is not None:
        while True:
            piece = read(block_size)
            if not piece:
                return
            yield piece
    yield from source  # type: ignore[misc]


def iter_chunks(
    source: StreamSource, params: CdcParams = DEFAULT_PARAMS, *, buffer_size: int = DEFAULT_BUFFER
) -> Iterator[bytes]:
    """Pull-style chunking of a whole stream, holding at most one window plus one read block."""
    chunker = ContentChunker(params, buffer_size=buffer_size)
    for block in iter_blocks(source):
        yield from chunker.feed(block)
    yield from chunker.finish()
