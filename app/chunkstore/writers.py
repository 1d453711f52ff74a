"""Writers of restore points and exports: collect what a manifest will list, then publish it at once.

Nothing a writer collects is visible until ``commit()`` writes the manifest, the one atomic step. Both
kinds hold streams (``app.chunkstore.streams``), and the bookkeeping for them lives once, in
``StreamSetWriter``: a stream reserves its name and an index key prefix, writes its index segments as
it goes, and is recorded when it finishes, or released when it fails, so that the rest can still be
committed. Several streams may run in threads at once, which is why every piece of bookkeeping (disks
included) is changed under the writer's lock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from app.chunkstore.errors import RepositoryError
from app.chunkstore.index import DiskIndex
from app.chunkstore.layout import export_index_prefix, index_prefix, validate_id
from app.chunkstore.manifest import DiskRecord, Export, RestorePoint, StreamRecord, validate_stream_name

if TYPE_CHECKING:
    from app.chunkstore.repository import Repository

_M = TypeVar("_M")


class StreamSetWriter:
    """The stream bookkeeping shared by ``RestorePointWriter`` and ``ExportWriter``.

    Stream numbers are never reused within a writer, so the segments a released stream left behind
    (orphans, swept by GC after its grace period) are never overwritten by a later stream's.
    """

    kind = "restore point"

    def __init__(
        self, repo: Repository, owner_id: str, index_prefix: str, created_at: datetime | None
    ) -> None:
        self._repo = repo
        self.id = validate_id(owner_id, self.kind)
        self._index_prefix = index_prefix
        self._created_at = created_at or datetime.now(UTC)
        self._streams: list[StreamRecord] = []
        self._stream_slots: dict[str, str] = {}  # reserved name -> index key prefix
        self._stream_numbers = 0
        self._lock = threading.Lock()
        self._committed = False

    @property
    def repo(self) -> Repository:
        return self._repo

    @property
    def streams(self) -> Sequence[StreamRecord]:
        with self._lock:
            return tuple(self._streams)

    def _check_open(self) -> None:
        """Call with the lock held."""
        if self._committed:
            raise RepositoryError(f"{self.kind} {self.id!r} already committed")

    def reserve_stream(self, name: str) -> str:
        """Claim ``name`` for a stream; return the key prefix its index segments are written under."""
        validate_stream_name(name)
        with self._lock:
            self._check_open()
            if name in self._stream_slots:
                raise ValueError(f"stream {name!r} added twice")
            prefix = f"{self._index_prefix}s{self._stream_numbers}-"
            self._stream_numbers += 1
            self._stream_slots[name] = prefix
            return prefix

    def release_stream(self, name: str) -> None:
        """Give up a reserved stream that failed: the rest can still be committed without it.

        Segments it already wrote stay as orphans; GC removes them after its grace period.
        """
        with self._lock:
            if not any(s.name == name for s in self._streams):
                self._stream_slots.pop(name, None)

    def add_stream(self, record: StreamRecord) -> None:
        """Record a finished stream whose index segments are written (under its reserved prefix)."""
        with self._lock:
            self._check_open()
            prefix = self._stream_slots.get(record.name)
            if prefix is None:
                raise ValueError(f"stream {record.name!r} was not reserved")
            if any(s.name == record.name for s in self._streams):
                raise ValueError(f"stream {record.name!r} added twice")
            if any(not seg.key.startswith(prefix) for seg in record.segments):
                raise ValueError(f"stream {record.name!r} has index segments outside its prefix")
            self._streams.append(record)

    def _commit(self, publish: Callable[[tuple[StreamRecord, ...]], _M]) -> _M:
        """Publish the manifest ``publish`` builds from the finished streams, once, with no stream open."""
        with self._lock:
            self._check_open()
            unfinished = set(self._stream_slots) - {s.name for s in self._streams}
            if unfinished:
                raise RepositoryError(f"streams still being written: {sorted(unfinished)}")
            manifest = publish(tuple(self._streams))
            self._committed = True
            return manifest


class RestorePointWriter(StreamSetWriter):
    """Collects the disks and streams of one restore point; nothing is visible until ``commit()``.

    Each disk's index is written as soon as it is added, so a VM with many large disks never holds all
    of their indexes in memory at once.
    """

    kind = "restore point"

    def __init__(
        self,
        repo: Repository,
        restore_point_id: str,
        vm_config: dict[str, Any],
        metadata: dict[str, Any],
        created_at: datetime | None,
    ) -> None:
        super().__init__(repo, restore_point_id, index_prefix(restore_point_id), created_at)
        self._vm_config = vm_config
        self._metadata = metadata
        self._disks: list[DiskRecord] = []

    @property
    def disks(self) -> Sequence[DiskRecord]:
        with self._lock:
            return tuple(self._disks)

    def add_disk(self, *, key: str, label: str, index: DiskIndex, change_id: str | None = None) -> DiskRecord:
        if index.chunk_size != self._repo.chunk_size:
            raise ValueError("index chunk size differs from the repository's")
        # Held while the index is written: the key is numbered by position, and a commit must not slip
        # in between the write and the record.
        with self._lock:
            self._check_open()
            if any(d.key == key for d in self._disks):
                raise ValueError(f"disk {key!r} added twice")
            index_key = f"{self._index_prefix}{len(self._disks)}"
            digest, _ = self._repo.write_index(index_key, index)
            record = DiskRecord(
                key=key,
                label=label,
                size=index.disk_size,
                chunk_size=index.chunk_size,
                change_id=change_id,
                index_key=index_key,
                index_hash=digest,
                chunks=len(index),
            )
            self._disks.append(record)
            return record

    def commit(self) -> RestorePoint:
        """Write the manifest: the single atomic step that makes the restore point exist."""
        return self._commit(self._publish)

    def _publish(self, streams: tuple[StreamRecord, ...]) -> RestorePoint:
        point = RestorePoint(
            id=self.id,
            created_at=self._created_at,
            vm_config=self._vm_config,
            metadata=self._metadata,
            disks=tuple(self._disks),
            streams=streams,
        )
        self._repo.write_manifest(point)
        return point


class ExportWriter(StreamSetWriter):
    """Collects the streams of one export (``Repository.begin_export``); invisible until ``commit()``.

    Streams are written into it exactly as into a restore point (``open_stream_backup``,
    ``backup_stream``).
    """

    kind = "export"

    def __init__(
        self, repo: Repository, export_id: str, metadata: dict[str, Any], created_at: datetime | None
    ) -> None:
        super().__init__(repo, export_id, export_index_prefix(export_id), created_at)
        self._metadata = metadata

    def commit(self) -> Export:
        """Write the export's manifest: the single atomic step that makes it exist (and downloadable)."""
        return self._commit(self._publish)

    def _publish(self, streams: tuple[StreamRecord, ...]) -> Export:
        if not streams:
            raise RepositoryError(f"export {self.id!r} holds no stream")
        export = Export(id=self.id, created_at=self._created_at, metadata=self._metadata, streams=streams)
        self._repo.write_export(export)
        return export
