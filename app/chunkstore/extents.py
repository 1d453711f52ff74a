"""Mapping Changed Block Tracking extents onto fixed chunks.

Chunks are aligned to disk offsets, so a changed byte range dirties exactly the chunks it overlaps. The
result is a sorted list of merged half-open chunk ranges rather than a set of chunk numbers, so that a
2 TiB disk with a long extent list costs a few tuples, not hundreds of thousands of ints.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def chunk_ranges(
    extents: Iterable[tuple[int, int]], chunk_size: int, disk_size: int
) -> list[tuple[int, int]]:
    """Merged, sorted ``[start, end)`` chunk-number ranges overlapping the ``(offset, length)`` extents."""
    count = -(-disk_size // chunk_size)
    ranges: list[tuple[int, int]] = []
    for offset, length in extents:
        if offset < 0 or length < 0:
            raise ValueError(f"invalid extent ({offset}, {length})")
        if length == 0 or offset >= disk_size:
            continue
        first = offset // chunk_size
        last = min((offset + length - 1) // chunk_size, count - 1)
        ranges.append((first, last + 1))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def in_ranges(count: int, ranges: list[tuple[int, int]]) -> Iterator[bool]:
    """For chunk numbers 0..count-1, whether each falls in ``ranges`` (sorted, merged), in one pass."""
    pos = 0
    for start, end in ranges:
        start = min(start, count)
        end = min(end, count)
        for _ in range(pos, start):
            yield False
        for _ in range(max(pos, start), end):
            yield True
        pos = max(pos, end)
    for _ in range(pos, count):
        yield False
