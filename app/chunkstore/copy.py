"""Copying restore points to another repository that shares the keys (an offsite copy).

    source manifest, indexes ─▶ the chunks they reference ─▶ dedup check on the target (batched)
      ─▶ absent chunks copied as stored (thread pool, bounded) ─▶ index objects ─▶ manifest, last

Every chunk is verified at the source before it travels (a damaged chunk fails the copy, loudly,
rather than reaching the offsite repository). Objects move as they are stored: compressed and
encrypted chunks, sealed indexes and manifests are valid in the target because it was made with
``Repository.create_copy_target`` (same keys, same chunk ids). Only the chunks the target lacks
travel, so a second point of a slowly changing VM moves little. The manifest goes last: a copy
interrupted at any step leaves no restorable-looking point behind, only chunks and indexes that the
next attempt reuses (or the target's GC removes after its grace period). Chunks found present are
touched, so a GC running on the target meanwhile keeps them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

from app.chunkstore.errors import ObjectMissing, RepositoryError
from app.chunkstore.ids import ZERO_ID, chunk_key, parse_chunk_key
from app.chunkstore.layout import index_prefix, manifest_key
from app.chunkstore.repository import EXISTS_BATCH, Repository

DEFAULT_WORKERS = 8


@dataclass
class CopyStats:
    chunks: int = 0  # distinct chunks the point references
    chunks_copied: int = 0
    bytes_copied: int = 0  # stored bytes that travelled (chunks, indexes, manifest)
    objects_copied: int = 0
    duration: float = 0.0


class CopyCancelled(RepositoryError):
    """The caller's cancel event was set; the target has no manifest for the point."""


def copy_restore_point(
    source: Repository,
    target: Repository,
    restore_point_id: str,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[CopyStats], None] | None = None,
    cancel: threading.Event | None = None,
) -> CopyStats:
    """Copy one restore point (its chunks, indexes and manifest) from ``source`` to ``target``."""
    if not target.compatible_with(source):
        raise RepositoryError(
            "the target repository does not share the source's keys; create it with "
            "Repository.create_copy_target"
        )
    started = time.monotonic()
    stats = CopyStats()
    point = source.read_restore_point(restore_point_id)  # checks the manifest on the way
    referenced: set[bytes] = set()
    for disk in point.disks:
        referenced |= source.read_index(disk).unique_ids()
    for stream in point.streams:
        for segment in stream.segments:
            referenced |= source.read_stream_segment(segment).unique_ids()
    referenced.discard(ZERO_ID)
    stats.chunks = len(referenced)

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise CopyCancelled("copy cancelled")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-copy") as pool:
        inflight: set[Future[int]] = set()
        for batch in _batches(sorted(referenced), EXISTS_BATCH):
            check_cancel()
            keys = [chunk_key(c) for c in batch]
            # Present means touched: a chunk the target's GC deleted between the two calls is
            # not touched, so it is copied again instead of being referenced while missing.
            present = target.backend.touch_many(target.backend.exists_many(keys))
            for key in keys:
                if key in present:
                    continue
                while len(inflight) >= workers * 2:
                    done, inflight = wait(inflight, return_when=FIRST_COMPLETED)
                    _collect(done, stats, progress)
                inflight.add(pool.submit(_copy_chunk, source, target, key))
        done, _ = wait(inflight)
        _collect(done, stats, progress)
    check_cancel()
    # Index objects (disk indexes, stream segments), then the manifest: the commit point.
    for key in source.backend.list(index_prefix(point.id)):
        stats.bytes_copied += _copy_object(source, target, key)
        stats.objects_copied += 1
    stats.bytes_copied += _copy_object(source, target, manifest_key(point.id))
    stats.objects_copied += 1
    stats.duration = time.monotonic() - started
    if progress is not None:
        progress(stats)
    return stats


def _copy_chunk(source: Repository, target: Repository, key: str) -> int:
    """A chunk, verified at the source (authenticated, decompressed, re-hashed), sent as stored."""
    chunk_id = parse_chunk_key(key)
    assert chunk_id is not None
    data = source.get_stored_chunk(chunk_id)
    target.backend.put(key, data)
    return len(data)


def _copy_object(source: Repository, target: Repository, key: str) -> int:
    """An index or manifest: sealed and hash-checked by its readers, so copied as it is."""
    try:
        data = source.backend.get(key)
    except ObjectMissing:
        raise RepositoryError(
            f"{key} is referenced by the restore point but missing from the source"
        ) from None
    target.backend.put(key, data)
    return len(data)


def _collect(done: set[Future[int]], stats: CopyStats, progress: Callable[[CopyStats], None] | None) -> None:
    for future in done:
        stats.bytes_copied += future.result()  # a failed copy ends the whole copy here
        stats.chunks_copied += 1
        stats.objects_copied += 1
    if progress is not None and done:
        progress(stats)


def _batches(items: list[bytes], size: int) -> Iterator[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
