"""Reading a stream back: its bytes in order, every chunk verified, the whole stream checked at the end.

Chunks are fetched ahead in a thread pool within a byte budget, so a restore feeding ``pg_restore`` or
``mariadb`` keeps the repository busy while the database consumes. ``get_chunk`` already authenticates
and re-hashes each chunk; on top of that every chunk's length must match the index, and at the end the
size and the whole-stream hash must match the record. That last check can only fail after the bytes
were handed on, so it raises ``StreamDamaged`` loudly and the caller must treat the restore as failed
(``pg_restore --single-transaction`` rolls back when its input ends in an error).

Streams of exports are read the same way: pass the ``Export`` (``Repository.read_export``) where a
restore point is expected.
"""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from app.chunkstore.errors import ChunkDamaged, StreamDamaged, StreamNotFound
from app.chunkstore.manifest import Export, RestorePoint, StreamRecord
from app.chunkstore.repository import Repository
from app.chunkstore.tuning import tune_malloc

DEFAULT_WORKERS = 4
PREFETCH_BYTES = 32 << 20


#: Where a stream is read from: a restore point or an export already read, or a restore point's id.
StreamOwner = RestorePoint | Export | str


def stream_record(repo: Repository, point: StreamOwner, name: str) -> StreamRecord:
    """The record of stream ``name``; ``point`` is a manifest already read, or a restore point id."""
    if isinstance(point, str):
        point = repo.read_restore_point(point)
    try:
        return point.stream(name)
    except KeyError:
        kind = "export" if isinstance(point, Export) else "restore point"
        raise StreamNotFound(point.id, name, kind=kind) from None


def _entries(repo: Repository, record: StreamRecord) -> Iterator[tuple[bytes, int]]:
    for segment in record.segments:  # one segment in memory at a time
        yield from repo.read_stream_segment(segment)


def iter_stream(
    repo: Repository,
    point: StreamOwner,
    name: str,
    *,
    workers: int = DEFAULT_WORKERS,
    prefetch_bytes: int = PREFETCH_BYTES,
) -> Generator[bytes, None, None]:
    """Yield the stream's bytes in order, one chunk at a time.

    ``StreamNotFound`` (and a missing restore point) is raised here, at the call; then the generator
    raises ``ChunkMissing``/``ChunkDamaged`` (naming the chunk) when a chunk cannot be read back as
    itself, and ``StreamDamaged`` after the last chunk when the size or the whole-stream hash differs
    from the record. Closing the generator early stops the fetches.
    """
    if workers < 1:
        raise ValueError("workers must be >= 1")
    record = stream_record(repo, point, name)
    if record.hash_algorithm != repo.stream_hash_algorithm:
        raise StreamDamaged(
            name, f"hashed with {record.hash_algorithm}, the repository uses {repo.stream_hash_algorithm}"
        )
    return _read_stream(repo, record, workers, prefetch_bytes)


def _read_stream(
    repo: Repository, record: StreamRecord, workers: int, prefetch_bytes: int
) -> Generator[bytes, None, None]:
    name = record.name
    tune_malloc()
    hasher = repo.stream_hasher()
    entries = _entries(repo, record)
    pending: deque[tuple[bytes, int, Future[bytes]]] = deque()
    ahead = 0
    total = 0
    exhausted = False
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-stream-read")
    try:
        while True:
            while not exhausted and (not pending or ahead < prefetch_bytes):
                entry = next(entries, None)
                if entry is None:
                    exhausted = True
                    break
                chunk_id, length = entry
                pending.append((chunk_id, length, pool.submit(repo.get_chunk, chunk_id)))
                ahead += length
            if not pending:
                break
            chunk_id, length, future = pending.popleft()
            ahead -= length
            data = future.result()
            if len(data) != length:
                raise ChunkDamaged(chunk_id, f"{len(data)} bytes where the stream index expects {length}")
            hasher.update(data)
            total += length
            yield data
    finally:
        pending.clear()
        pool.shutdown(wait=True, cancel_futures=True)
    if total != record.size:
        raise StreamDamaged(name, f"{total} bytes read, the record says {record.size}")
    if hasher.hexdigest() != record.digest:
        raise StreamDamaged(name, "whole-stream hash mismatch")


class StreamReader(io.RawIOBase):
    """A stream of a restore point (or export) as a readable, non-seekable file object.

    For ``shutil.copyfileobj(reader, proc.stdin)`` into ``pg_restore``/``mariadb``, or ``tarfile``'s
    ``r|`` mode. The final checks of ``iter_stream`` surface as an exception from the ``read`` that
    reaches the end: read to EOF (``read()`` returning ``b""``) before calling a restore good. Once a
    read has raised, every later read raises the same error: a caller that retries never sees a
    clean end of file after damage.
    """

    def __init__(
        self,
        repo: Repository,
        point: StreamOwner,
        name: str,
        *,
        workers: int = DEFAULT_WORKERS,
        prefetch_bytes: int = PREFETCH_BYTES,
    ) -> None:
        super().__init__()
        if isinstance(point, str):
            point = repo.read_restore_point(point)
        self.record = stream_record(repo, point, name)
        self._chunks = iter_stream(repo, point, name, workers=workers, prefetch_bytes=prefetch_bytes)
        self._piece = memoryview(b"")
        self._eof = False
        self._error: BaseException | None = None
        self._position = 0

    @property
    def size(self) -> int:
        return self.record.size

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on a closed stream")
        if self._error is not None:
            raise self._error
        out = memoryview(buffer).cast("B")
        while not self._piece and not self._eof:
            try:
                self._piece = memoryview(next(self._chunks))
            except StopIteration:
                self._eof = True
            except Exception as exc:
                # The generator is finished after raising: without this, the next read would see
                # StopIteration and report a clean end of a damaged stream.
                self._error = exc
                raise
        n = min(len(out), len(self._piece))
        out[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        self._position += n
        return n

    def close(self) -> None:
        # getattr: IOBase's finalizer calls close() even when __init__ raised (StreamNotFound) early.
        chunks = getattr(self, "_chunks", None)
        if not self.closed and chunks is not None:
            chunks.close()
            self._piece = memoryview(b"")
        super().close()
