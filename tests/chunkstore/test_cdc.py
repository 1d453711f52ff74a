"""Content-defined chunking: windowed chunking equals whole-buffer chunking, boundaries resist shifts,
memory is bounded by the window, parameters are checked; and the pieces a stream source yields."""

from __future__ import annotations

import io
import random
import tracemalloc
from collections.abc import Iterator

import pytest
from fastcdc import fastcdc as whole_buffer_cdc  # type: ignore[import-untyped]

from app.chunkstore import CdcParams, ContentChunker
from app.chunkstore.cdc import DEFAULT_PARAMS, iter_blocks, iter_chunks

MiB = 1 << 20
TINY = CdcParams(min_size=256, avg_size=1024, max_size=4096)


def reference(data: bytes, params: CdcParams) -> list[bytes]:
    """The chunks of the whole buffer at once: what a windowed chunker must reproduce."""
    cuts = whole_buffer_cdc(
        data, min_size=params.min_size, avg_size=params.avg_size, max_size=params.max_size
    )
    return [data[c.offset : c.offset + c.length] for c in cuts]


def mixed(size: int, rng: random.Random) -> bytes:
    """Random runs, repeated runs and zero runs: content with and without natural cut points."""
    parts: list[bytes] = []
    total = 0
    while total < size:
        n = rng.randint(1, 20_000)
        kind = rng.random()
        if kind < 0.5:
            parts.append(rng.randbytes(n))
        elif kind < 0.8:
            parts.append((rng.randbytes(rng.randint(1, 64)) * n)[:n])
        else:
            parts.append(bytes(n))
        total += n
    return b"".join(parts)[:size]


def feed_in_pieces(chunker: ContentChunker, data: bytes, rng: random.Random) -> list[bytes]:
    sizes = [0, 1, 2, 63, 255, 4095, 4096, 4097, 8191, 8192, 30_000, 100_000]
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        n = rng.choice(sizes) if rng.random() < 0.7 else rng.randint(0, 50_000)
        out.extend(chunker.feed(data[pos : pos + n]))
        pos += n
    out.extend(chunker.finish())
    return out


@pytest.mark.parametrize("seed", range(12))
def test_feeding_pieces_yields_exactly_the_whole_buffer_chunks(seed: int) -> None:
    rng = random.Random(seed)
    data = mixed(rng.randint(0, 400_000), rng)
    chunker = ContentChunker(TINY, buffer_size=2 * TINY.max_size)  # the smallest window: many refills
    got = feed_in_pieces(chunker, data, rng)
    assert got == reference(data, TINY)
    assert b"".join(got) == data
    assert all(TINY.min_size <= len(c) <= TINY.max_size for c in got[:-1])


@pytest.mark.parametrize(
    "data", [b"", b"x", bytes(100_000), bytes(3 * 4096), random.Random(1).randbytes(4096 * 2 + 1)]
)
def test_edge_inputs_match_the_whole_buffer(data: bytes) -> None:
    chunker = ContentChunker(TINY, buffer_size=1)  # raised to twice the maximum chunk
    assert chunker.buffer_size == 2 * TINY.max_size
    assert feed_in_pieces(chunker, data, random.Random(2)) == reference(data, TINY)


def test_finish_ends_the_chunker() -> None:
    chunker = ContentChunker(TINY)
    assert chunker.feed(b"abc") == []
    assert chunker.finish() == [b"abc"]
    assert chunker.finish() == []
    with pytest.raises(ValueError, match="finished"):
        chunker.feed(b"more")


def test_boundaries_resist_shifts() -> None:
    rng = random.Random(20)
    data = rng.randbytes(20 * MiB)
    before = list(iter_chunks(io.BytesIO(data)))
    for edited in (
        data[:1000] + b"a row inserted near the start" + data[1000:],
        data[:5000] + data[5100:],  # a hundred bytes removed
        data[: 3 * MiB] + bytes(b ^ 0xFF for b in data[3 * MiB : 3 * MiB + 10]) + data[3 * MiB + 10 :],
    ):
        after = list(iter_chunks(io.BytesIO(edited)))
        assert b"".join(after) == edited
        unchanged = set(before) & set(after)
        assert len(unchanged) >= len(before) - 3, (len(unchanged), len(before))
    assert 20 <= len(before) <= 80  # 512 KiB on average


def test_chunker_memory_does_not_grow_with_the_stream() -> None:
    chunker = ContentChunker(DEFAULT_PARAMS)
    window = chunker.buffer_size
    rng = random.Random(3)
    total = 0
    tracemalloc.start()
    try:
        for _ in range(64):
            piece = rng.randbytes(MiB)
            total += sum(len(c) for c in chunker.feed(piece))
            assert chunker.buffer_size == window
        total += sum(len(c) for c in chunker.finish())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 64 * MiB
    # The chunks one call returns (at most a window's worth: cuts are settled when the window fills) and
    # the piece itself: nothing proportional to the 64 MiB fed.
    assert peak < window + MiB + DEFAULT_PARAMS.max_size, peak


@pytest.mark.parametrize(
    ("min_size", "avg_size", "max_size"),
    [
        (32, 1024, 4096),  # min below 64
        (1024, 1024, 4096),  # min not below avg
        (256, 4096, 4096),  # avg not below max
        (64, 128, 4096),  # avg below 256
        (64, 256, 512),  # max below fastcdc's 1024
        (1024, 4096, (8 << 20) + 1),  # max above the repository's largest stream chunk
    ],
)
def test_cdc_params_are_validated(min_size: int, avg_size: int, max_size: int) -> None:
    with pytest.raises(ValueError, match=r"chunk size|need"):
        CdcParams(min_size=min_size, avg_size=avg_size, max_size=max_size)


def test_cdc_params_json_round_trip() -> None:
    for params in (DEFAULT_PARAMS, TINY, CdcParams.for_average(64 * 1024)):
        doc = params.to_json()
        assert doc["algorithm"] == "fastcdc-2016"
        assert CdcParams.from_json(doc) == params
    assert CdcParams.for_average(64 * 1024) == CdcParams(16 * 1024, 64 * 1024, 256 * 1024)
    with pytest.raises(ValueError, match="unknown chunker"):
        CdcParams.from_json({**TINY.to_json(), "algorithm": "rabin"})


class ShortReads(io.RawIOBase):
    """A pipe-like source: every read returns at most 1000 bytes."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), 1000, len(self._data))
        memoryview(buffer)[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


class NonBlocking(io.RawIOBase):
    def readinto(self, buffer: bytearray | memoryview) -> None:  # type: ignore[override]
        return None


class ReadOnly:
    def __init__(self, data: bytes) -> None:
        self._f = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        return self._f.read(n)


def test_iter_blocks_sources() -> None:
    data = random.Random(4).randbytes(10_000)
    pieces = [bytes(b) for b in iter_blocks(ShortReads(data), block_size=4096)]
    assert b"".join(pieces) == data and max(map(len, pieces)) == 1000
    assert b"".join(bytes(b) for b in iter_blocks(io.BytesIO(data), block_size=3000)) == data
    assert b"".join(bytes(b) for b in iter_blocks(ReadOnly(data), block_size=3000)) == data

    def generated() -> Iterator[bytes]:
        yield b""
        yield data[:10]
        yield data[10:]

    assert b"".join(bytes(b) for b in iter_blocks(generated())) == data
    assert list(iter_blocks(io.BytesIO(b""))) == []


@pytest.mark.parametrize("source", [b"bytes", bytearray(b"x"), memoryview(b"x"), "text"])
def test_iter_blocks_refuses_bytes_and_str(source: object) -> None:
    with pytest.raises(TypeError, match="not a str or bytes"):
        next(iter_blocks(source))  # type: ignore[arg-type]


def test_iter_blocks_refuses_what_would_end_the_stream_silently() -> None:
    with pytest.raises(ValueError, match="block_size"):
        next(iter_blocks(io.BytesIO(b"data"), block_size=0))
    with pytest.raises(BlockingIOError):
        next(iter_blocks(NonBlocking()))
