"""Backup of a byte stream (a database dump, a tar of files) into the repository.

    bytes ─▶ content-defined chunker ─▶ chunk id + whole-stream hash + index entry (caller's thread)
          ─▶ dedup check in batches (caller's thread) ─▶ compress + encrypt + write, new chunks only (pool)

A dump arrives from a subprocess pipe at the producer's pace, so the natural shape is push:
``StreamBackup.write()`` takes bytes as they come (and is a writable file object, so ``tarfile`` can
write into it), ``finish()`` records the stream in the restore point. ``backup_stream`` is the pull
form for a file object or an iterable of bytes. Both write into a restore point or an export alike
(any ``StreamSetWriter``).

Memory is bounded whatever the stream's length: the chunker's window (8 MiB) and the chunks cut from
one window (cuts are settled when the window fills, so a stream shorter than that is all processed in
``finish()``), at most ``max_inflight_bytes`` of chunks between "cut" and "stored", and one index
segment (``SEGMENT_ENTRIES`` entries); earlier segments are already written. Chunking and hashing
are sequential by nature (the whole-stream hash needs the bytes in order) and run in the caller's
thread; zstd, AES-GCM and the writes run in the pool.

Chunks found present by the dedup check are touched (``Repository.missing``), the same rule that lets
GC run during disk backups: a sweep never removes a chunk a running backup is about to reference.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from app.chunkstore.backend import BytesLike
from app.chunkstore.backup import BackupStats, ProgressCallback
from app.chunkstore.cdc import DEFAULT_PARAMS, CdcParams, ContentChunker, StreamSource, iter_blocks
from app.chunkstore.errors import BackupCancelled, RepositoryError
from app.chunkstore.manifest import StreamRecord, StreamSegment
from app.chunkstore.repository import Repository
from app.chunkstore.streamindex import SEGMENT_ENTRIES, SegmentBuilder
from app.chunkstore.tuning import tune_malloc
from app.chunkstore.writers import StreamSetWriter

DEFAULT_WORKERS = 4
#: Chunk bytes held between the chunker and the backend (dedup batch plus chunks being stored).
INFLIGHT_BYTES = 32 << 20
#: Chunks per dedup check: one round trip (one batch of HEADs on S3-like backends).
DEDUP_BATCH = 64


@dataclass(frozen=True, slots=True)
class StreamBackupResult:
    record: StreamRecord  # already added to the restore point writer
    stats: BackupStats  # chunks_total/chunks_read: chunks cut; chunks_zero is always 0


class StreamBackup:
    """A stream being backed up into one restore point (or export): ``write()`` its bytes, then ``finish()``.

    Used from one thread. Any error in ``write()`` or ``finish()`` abandons the stream (``abort()``):
    after a failed store its bookkeeping no longer matches what is stored, so it must never be
    finished. A context manager: leaving the block with an exception (or without ``finish()``)
    abandons it too. The restore point can still be committed without it; chunks and index segments
    already written are left for GC.
    """

    def __init__(
        self,
        writer: StreamSetWriter,
        name: str,
        *,
        metadata: dict[str, Any] | None = None,
        params: CdcParams = DEFAULT_PARAMS,
        workers: int = DEFAULT_WORKERS,
        max_inflight_bytes: int = INFLIGHT_BYTES,
        progress: ProgressCallback | None = None,
        progress_interval: float = 0.5,
        cancel: threading.Event | None = None,
        segment_entries: int = SEGMENT_ENTRIES,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        repo = writer.repo
        if params.max_size > repo.max_chunk_size:
            raise ValueError(f"the maximum chunk size exceeds the repository's {repo.max_chunk_size}")
        tune_malloc()
        self.name = name
        self._writer = writer
        self._repo = repo
        self._metadata = dict(metadata or {})
        self._params = params
        self._chunker = ContentChunker(params)
        self._hasher = repo.stream_hasher()
        self._segment = SegmentBuilder(segment_entries)
        self._segments: list[StreamSegment] = []
        self._size = 0
        self._budget = max(max_inflight_bytes, 2 * params.max_size)
        self._inflight = 0  # bytes of chunk data held: batch + being stored
        self._batch: list[tuple[bytes, bytes]] = []
        self._batch_bytes = 0
        # Submitted for storing by this stream and not done yet. Chunks it stored earlier are in the
        # repository's bounded cache of known ids, so a repeat costs no round trip either.
        self._storing: set[bytes] = set()
        self._events: queue.SimpleQueue[Future[tuple[bytes, int, int]]] = queue.SimpleQueue()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-stream")
        self._stats = BackupStats()
        self._progress = progress
        self._progress_interval = progress_interval
        self._cancel = cancel
        self._started = time.monotonic()
        self._last_progress = self._started
        # Reserved last, once nothing else here can fail: a name reserved by a constructor that then
        # raised would never be released, and the restore point could never be committed.
        try:
            self._prefix = writer.reserve_stream(name)
        except BaseException:
            self._pool.shutdown(wait=False)
            raise
        self._state = "open"  # open -> finished | aborted

    # -- file-like (writable) ----------------------------------------------------------------------

    def writable(self) -> bool:
        return True

    def write(self, data: BytesLike) -> int:
        """Take the next bytes of the stream; blocks while too much is waiting to be stored."""
        self._check_open()
        try:
            view = memoryview(data).cast("B")
            step = self._chunker.buffer_size  # feed window-sized pieces: chunks returned stay bounded
            for start in range(0, len(view), step):
                if self._cancel is not None and self._cancel.is_set():
                    raise BackupCancelled("backup cancelled")
                for chunk in self._chunker.feed(view[start : start + step]):
                    self._take(chunk)
        except BaseException:
            # A failed store leaves its id in ``_storing`` forever and its chunk in the index: going
            # on would hang in finish() or, worse, record a stream whose chunk was never stored.
            self.abort()
            raise
        return len(view)

    def flush(self) -> None:
        """Nothing to do: bytes are chunked as they come; present for file-object callers."""

    def __enter__(self) -> StreamBackup:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._state == "open":
            self.abort()

    # -- end -----------------------------------------------------------------------------------------

    def finish(self, *, metadata: dict[str, Any] | None = None) -> StreamBackupResult:
        """Store what is left, write the last index segment and record the stream in the restore point.

        ``metadata`` is merged into the stream's metadata: facts known only at the end (files skipped).
        """
        self._check_open()
        if metadata:
            self._metadata.update(metadata)
        try:
            for chunk in self._chunker.finish():
                self._take(chunk)
            self._dedup()
            while self._storing:
                self._wait_one()
            if len(self._segment) or not self._segments:
                self._write_segment()
            record = StreamRecord(
                name=self.name,
                size=self._size,
                hash_algorithm=self._repo.stream_hash_algorithm,
                digest=self._hasher.hexdigest(),
                chunker=self._params.to_json(),
                segments=tuple(self._segments),
                metadata=self._metadata,
            )
            self._writer.add_stream(record)
        except BaseException:
            self.abort()
            raise
        self._state = "finished"
        self._pool.shutdown(wait=True)
        self._stats.duration = time.monotonic() - self._started
        if self._progress is not None:
            self._progress(self._stats.snapshot())
        return StreamBackupResult(record, self._stats.snapshot())

    def abort(self) -> None:
        """Abandon the stream: stop storing, release its name in the restore point."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._batch.clear()
        self._writer.release_stream(self.name)

    @property
    def stats(self) -> BackupStats:
        return self._stats.snapshot()

    # -- pipeline ------------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state != "open":
            raise RepositoryError(f"stream {self.name!r} is {self._state}")

    def _take(self, chunk: bytes) -> None:
        length = len(chunk)
        chunk_id = self._repo.chunk_id(chunk)
        self._hasher.update(chunk)
        self._size += length
        self._segment.append(chunk_id, length)
        if self._segment.full:
            self._write_segment()
        stats = self._stats
        stats.chunks_total += 1
        stats.chunks_read += 1
        stats.bytes_read += length
        if chunk_id in self._storing:
            stats.chunks_done += 1
            stats.chunks_reused += 1  # the same content twice in this stream
        else:
            self._batch.append((chunk_id, chunk))
            self._batch_bytes += length
            self._inflight += length
            if len(self._batch) >= DEDUP_BATCH or self._batch_bytes >= self._budget // 2:
                self._dedup()
        self._drain(block=False)
        while self._inflight > self._budget:
            self._wait_one()
        self._maybe_progress()

    def _write_segment(self) -> None:
        key = f"{self._prefix}{len(self._segments)}"
        self._segments.append(self._repo.write_stream_segment(key, self._segment.take()))

    def _dedup(self) -> None:
        """Ask the repository about the batch (present chunks get touched); submit the absent ones."""
        if not self._batch:
            return
        absent = self._repo.missing(c for c, _ in self._batch if c not in self._storing)
        for chunk_id, data in self._batch:
            if chunk_id in absent and chunk_id not in self._storing:
                self._storing.add(chunk_id)
                self._pool.submit(self._store, chunk_id, data).add_done_callback(self._events.put)
            else:
                self._inflight -= len(data)
                self._stats.chunks_done += 1
                self._stats.chunks_reused += 1
        self._batch = []
        self._batch_bytes = 0

    def _store(self, chunk_id: bytes, data: bytes) -> tuple[bytes, int, int]:
        return chunk_id, len(data), self._repo.put_chunk(chunk_id, data)

    def _wait_one(self) -> None:
        if not self._storing:  # only the dedup batch is held: check it now
            self._dedup()
            return
        self._done(self._events.get())

    def _drain(self, *, block: bool) -> None:
        while True:
            try:
                future = self._events.get(block=block)
            except queue.Empty:
                return
            self._done(future)

    def _done(self, future: Future[tuple[bytes, int, int]]) -> None:
        chunk_id, length, stored = future.result()  # a store's exception ends the backup here
        self._storing.discard(chunk_id)
        self._inflight -= length
        stats = self._stats
        stats.chunks_done += 1
        stats.chunks_new += 1
        stats.bytes_new += length
        stats.bytes_stored += stored

    def _maybe_progress(self) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._last_progress >= self._progress_interval:
            self._last_progress = now
            self._stats.duration = now - self._started
            self._progress(self._stats.snapshot())


def open_stream_backup(
    writer: StreamSetWriter,
    name: str,
    *,
    metadata: dict[str, Any] | None = None,
    params: CdcParams = DEFAULT_PARAMS,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    max_inflight_bytes: int = INFLIGHT_BYTES,
    segment_entries: int = SEGMENT_ENTRIES,
) -> StreamBackup:
    """Start the stream ``name`` of the restore point (or export) being written; ``write()`` its bytes."""
    return StreamBackup(
        writer,
        name,
        metadata=metadata,
        params=params,
        workers=workers,
        progress=progress,
        cancel=cancel,
        max_inflight_bytes=max_inflight_bytes,
        segment_entries=segment_entries,
    )


def backup_stream(
    repo: Repository,
    writer: StreamSetWriter,
    name: str,
    stream: StreamSource | Iterable[BytesLike],
    *,
    metadata: dict[str, Any] | None = None,
    params: CdcParams = DEFAULT_PARAMS,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    max_inflight_bytes: int = INFLIGHT_BYTES,
    segment_entries: int = SEGMENT_ENTRIES,
) -> StreamBackupResult:
    """Read ``stream`` to its end (a binary file object such as ``Popen.stdout``, or an iterable of
    bytes) and add it to the restore point (or export) being written as the stream ``name``.

    ``metadata`` is stored as given (database name, engine, dump format...). Nothing is published until
    the caller commits the restore point; if this raises, the name is released and the restore point
    can still be committed with its other streams and disks. Use the same ``params`` as the previous
    backup of this stream (``StreamRecord.chunker``) or dedup against it is lost.
    """
    if writer.repo is not repo:
        raise ValueError("the restore point writer belongs to another repository object")
    with open_stream_backup(
        writer,
        name,
        metadata=metadata,
        params=params,
        workers=workers,
        progress=progress,
        cancel=cancel,
        max_inflight_bytes=max_inflight_bytes,
        segment_entries=segment_entries,
    ) as backup:
        for block in iter_blocks(stream):
            backup.write(block)
        return backup.finish()
