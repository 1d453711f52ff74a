"""Sources: ``DiskImageReader.iter_ranges`` (the read-ahead behind downloads) checked against ``read_at``,
the volume sources that forward it, and the locked source of parser-decoded files."""

from __future__ import annotations

import io
import random
import threading
from pathlib import Path

import pytest

from app.chunkstore import DiskImageReader, FsBackend, Repository, backup_disk
from app.files.errors import CorruptFilesystem, SourceFailure
from app.files.source import BytesSource, LockedStreamSource, MappedSource, SliceSource, iter_ranges
from tests.files.conftest import FAST_KDF

CHUNK = 64 * 1024


class Disk:
    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


@pytest.fixture
def disk(tmp_path: Path) -> tuple[Repository, bytes, DiskImageReader]:
    rng = random.Random(5)
    data = b"".join(rng.randbytes(CHUNK) if n % 5 else bytes(CHUNK) for n in range(40)) + rng.randbytes(1234)
    repo = Repository.create(FsBackend(tmp_path / "repo", durable=False), chunk_size=CHUNK, kdf=FAST_KDF)
    index = backup_disk(repo, Disk(data), len(data), workers=2).index
    return repo, data, DiskImageReader(repo, index, cache_bytes=4 * CHUNK)


def consume(pieces: object, ranges: list[tuple[int, int]]) -> list[bytes]:
    """The bytes of each range, checking that no piece spans two ranges."""
    iterator = iter(pieces)  # type: ignore[call-overload]
    out = []
    for _, length in ranges:
        got = b""
        while len(got) < length:
            piece = next(iterator)
            assert 0 < len(piece) <= length - len(got)
            got += piece
        out.append(got)
    assert next(iterator, None) is None
    return out


def test_ranges_come_out_in_order_and_exact(disk: tuple[Repository, bytes, DiskImageReader]) -> None:
    _, data, reader = disk
    rng = random.Random(1)
    for _ in range(20):
        ranges = []
        for _ in range(rng.randrange(1, 30)):
            offset = rng.randrange(len(data))
            ranges.append((offset, rng.randrange(0, min(5 * CHUNK, len(data) - offset) + 1)))
        ranges = [r for r in ranges if r[1]]
        got = consume(reader.iter_ranges(ranges, workers=3, ahead=4), ranges)
        assert got == [data[o : o + n] for o, n in ranges]


def test_each_chunk_is_fetched_once_and_zeros_never(disk: tuple[Repository, bytes, DiskImageReader]) -> None:
    _, data, reader = disk
    ranges = [(0, 10 * CHUNK - 7), (10 * CHUNK - 7, 7), (10 * CHUNK, 30 * CHUNK)]
    assert b"".join(reader.iter_ranges(ranges)) == data[: 40 * CHUNK]
    assert reader.fetches == 32  # 40 chunks, every fifth one zero
    assert reader._cached == 0  # a download does not fill the cache


def test_cached_chunks_are_used(disk: tuple[Repository, bytes, DiskImageReader]) -> None:
    _, data, reader = disk
    reader.read_at(CHUNK, 10)
    assert reader.fetches == 1
    assert b"".join(reader.iter_ranges([(CHUNK, CHUNK)])) == data[CHUNK : 2 * CHUNK]
    assert reader.fetches == 1


def test_ranges_outside_the_disk_are_refused(disk: tuple[Repository, bytes, DiskImageReader]) -> None:
    _, data, reader = disk
    with pytest.raises(ValueError, match="does not lie within the disk"):
        list(reader.iter_ranges([(0, 10), (len(data) - 5, 6)]))
    with pytest.raises(ValueError, match="workers"):
        list(reader.iter_ranges([(0, 1)], workers=0))


def test_closing_early_stops_the_fetches(disk: tuple[Repository, bytes, DiskImageReader]) -> None:
    _, data, reader = disk
    pieces = reader.iter_ranges([(0, len(data))], workers=2, ahead=3)
    assert next(pieces) == data[:CHUNK]
    pieces.close()
    assert reader.fetches <= 5
    assert not [t for t in threading.enumerate() if t.name.startswith("chunkstore-readahead")]


def test_volume_sources_forward_ranges(disk: tuple[Repository, bytes, DiskImageReader]) -> None:
    _, data, reader = disk
    window = SliceSource(reader, 3 * CHUNK + 5, 20 * CHUNK)
    ranges = [(0, 100), (CHUNK, 3 * CHUNK), (20 * CHUNK - 1, 1)]
    assert consume(iter_ranges(window, ranges), ranges) == [data[3 * CHUNK + 5 + o :][:n] for o, n in ranges]
    mapped = MappedSource(reader, [(30 * CHUNK, 2 * CHUNK), (CHUNK, CHUNK + 10)])
    assert (
        b"".join(iter_ranges(mapped, [(0, mapped.size)]))
        == data[30 * CHUNK : 32 * CHUNK] + data[CHUNK : 2 * CHUNK + 10]
    )
    assert mapped.read_at(2 * CHUNK - 3, 6) == data[32 * CHUNK - 3 : 32 * CHUNK] + data[CHUNK : CHUNK + 3]
    with pytest.raises(EOFError, match="does not lie within"):
        list(iter_ranges(window, [(20 * CHUNK - 1, 2)]))
    plain = BytesSource(b"abcdef")  # no iter_ranges of its own: plain reads
    assert list(iter_ranges(plain, [(1, 2), (4, 2)])) == [b"bc", b"ef"]


def test_locked_stream_source() -> None:
    """The source of files only a parser can decode (NTFS compression): reads under the lock, checked."""
    lock = threading.RLock()
    source = LockedStreamSource(io.BytesIO(b"0123456789"), 10, lock, "reading /x")
    assert source.read_at(3, 4) == b"3456"
    assert source.read_at(8, 10) == b"89"
    assert source.read_at(10, 1) == b""
    short = LockedStreamSource(io.BytesIO(b"0123"), 10, lock, "reading /x")
    with pytest.raises(CorruptFilesystem, match="reading /x: the data ends 4 bytes early"):
        short.read_at(2, 6)

    class Failing(io.BytesIO):
        def __init__(self, error: BaseException) -> None:
            super().__init__()
            self.error = error

        def seek(self, offset: int, whence: int = 0) -> int:
            raise self.error

    with pytest.raises(
        CorruptFilesystem, match=r"reading /x: the filesystem's structures are damaged \(KeyError"
    ):
        LockedStreamSource(Failing(KeyError("x")), 10, lock, "reading /x").read_at(0, 1)
    missing = OSError("I/O error")
    with pytest.raises(OSError, match="I/O error"):  # the source's own error, not "damaged"
        LockedStreamSource(Failing(SourceFailure(missing)), 10, lock, "reading /x").read_at(0, 1)
