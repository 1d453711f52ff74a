"""Streaming restore of one disk: the disk's bytes in order, chunks fetched and verified in parallel.

Fetches run ahead of the consumer in a thread pool with a bounded prefetch. A chunk that occurs several
times in the disk is fetched once and kept only until its last occurrence, within a byte budget
(``hold_bytes``); beyond the budget it is simply fetched again. To know which ids repeat without a
dict over every entry (a 2 TiB disk has 512 Ki of them), a bitmap over id prefixes finds candidates
first and only those are counted exactly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor

from app.chunkstore.errors import ChunkDamaged
from app.chunkstore.ids import ID_SIZE, ZERO_ID
from app.chunkstore.index import DiskIndex
from app.chunkstore.repository import Repository
from app.chunkstore.tuning import tune_malloc

DEFAULT_WORKERS = 4
HOLD_BYTES = 64 << 20


def repeated_ids(index: DiskIndex) -> dict[bytes, int]:
    """Occurrence counts of the ids that appear more than once (zero sentinel excluded)."""
    count = len(index)
    bits = 1 << max(16, (count * 16).bit_length())
    seen = bytearray(bits // 8)
    mask = bits - 1
    candidates: set[bytes] = set()
    view = index.ids_view()
    for start in range(0, count * ID_SIZE, ID_SIZE):
        h = int.from_bytes(view[start : start + 8], "little") & mask
        byte, bit = h >> 3, 1 << (h & 7)
        if seen[byte] & bit:
            candidates.add(bytes(view[start : start + ID_SIZE]))
        else:
            seen[byte] |= bit
    candidates.discard(ZERO_ID)
    if not candidates:
        return {}
    counts = dict.fromkeys(candidates, 0)
    for chunk_id in index:
        if chunk_id in counts:
            counts[chunk_id] += 1
    return {c: n for c, n in counts.items() if n > 1}


def iter_disk(
    repo: Repository,
    index: DiskIndex,
    *,
    workers: int = DEFAULT_WORKERS,
    prefetch: int | None = None,
    hold_bytes: int = HOLD_BYTES,
) -> Generator[bytes, None, None]:
    """Yield the disk's content in order, one chunk-sized piece at a time (the last one trimmed).

    Zero chunks come out as zero bytes. Every stored chunk is authenticated and re-hashed before it is
    yielded; ``ChunkMissing`` / ``ChunkDamaged`` name the chunk. Closing the generator early stops the
    fetches.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    tune_malloc()
    if prefetch is None:
        prefetch = 2 * workers
    chunk_size = index.chunk_size
    zero = bytes(chunk_size)
    remaining = repeated_ids(index)
    live: dict[bytes, Future[bytes]] = {}  # fetched/fetching chunks that are needed again later
    held = 0
    pending: deque[tuple[int, Future[bytes] | None, bool]] = deque()  # (number, future, counts as fetch)
    fetches_ahead = 0
    count = len(index)
    planned = 0
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-restore")
    try:
        for number in range(count):
            # Plan ahead: submit fetches until the prefetch budget (or a bound on queued entries) is hit.
            while planned < count and fetches_ahead < prefetch and len(pending) < prefetch + 4096:
                chunk_id = index.chunk_id(planned)
                if chunk_id == ZERO_ID:
                    pending.append((planned, None, False))
                else:
                    future = live.get(chunk_id)
                    new_fetch = future is None
                    if future is None:
                        future = pool.submit(repo.get_chunk, chunk_id)
                        fetches_ahead += 1
                    left = remaining.get(chunk_id)
                    if left is not None:
                        left -= 1
                        remaining[chunk_id] = left
                        if left == 0:
                            if chunk_id in live:
                                del live[chunk_id]
                                held -= chunk_size
                        elif chunk_id not in live and held + chunk_size <= hold_bytes:
                            live[chunk_id] = future
                            held += chunk_size
                    pending.append((planned, future, new_fetch))
                planned += 1
            planned_number, future, new_fetch = pending.popleft()
            assert planned_number == number
            length = index.chunk_length(number)
            if future is None:
                yield zero if length == chunk_size else bytes(length)
                continue
            data = future.result()
            if new_fetch:
                fetches_ahead -= 1
            if len(data) != length:
                raise ChunkDamaged(
                    index.chunk_id(number), f"{len(data)} bytes where the index expects {length}"
                )
            yield data
    finally:
        live.clear()
        pending.clear()
        pool.shutdown(wait=True, cancel_futures=True)
