"""One pass over everything the repository keeps alive: every live manifest and the index objects it names.

GC marks from it and verify checks from it, so both see the same things as live: the disks and streams
of every restore point, and the streams of every export. Index objects are read one at a time (a
stream's index segment by segment), so a walk holds one index in memory, not the repository's.

Strict (GC): a manifest or index that cannot be read raises, because a mark that skipped it would free
chunks it still references. Tolerant (verify): the damage is reported through ``on_damaged`` and the
walk goes on, so one bad object does not hide the state of the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from app.chunkstore.errors import ExportNotFound, ObjectDamaged, RestorePointNotFound
from app.chunkstore.layout import EXPORT_PREFIX, ids_under
from app.chunkstore.manifest import DiskRecord, RestorePoint, StreamRecord
from app.chunkstore.repository import Repository

RESTORE_POINT = "restore point"
EXPORT = "export"


@dataclass(frozen=True, slots=True)
class Referrer:
    """What references an index object: a disk of a restore point, or a stream of one or of an export."""

    kind: str  # RESTORE_POINT or EXPORT
    owner_id: str
    disk: DiskRecord | None = None
    stream: str | None = None  # the stream's name

    def describe(self) -> str:
        what = f"disk {self.disk.key!r}" if self.disk is not None else f"stream {self.stream!r}"
        return f"{self.kind} {self.owner_id!r}, {what}"


class ManifestWalk:
    """Iterate to get ``(referrer, chunk ids)`` for every index object of every live manifest.

    After the iteration, the counters and sets below describe what was read. ``restore_points`` and
    ``exports`` hold the ids whose manifest was read (the live ones); ``index_keys`` every index object
    those manifests reference, readable or not.
    """

    def __init__(self, repo: Repository, *, on_damaged: Callable[[str], None] | None = None) -> None:
        self._repo = repo
        self._on_damaged = on_damaged
        self.restore_points: set[str] = set()
        self.exports: set[str] = set()
        self.disks = 0  # disk indexes read
        self.streams = 0  # streams whose every index segment was read
        self.index_keys: set[str] = set()

    def _damaged(self, exc: ObjectDamaged, where: str | None = None) -> None:
        if self._on_damaged is None:
            raise exc
        self._on_damaged(f"{exc} ({where})" if where else str(exc))

    def __iter__(self) -> Iterator[tuple[Referrer, set[bytes]]]:
        repo = self._repo
        for restore_point_id in repo.list_restore_points():
            try:
                point = repo.read_restore_point(restore_point_id)
            except RestorePointNotFound:
                continue  # deleted since the listing: it keeps nothing alive any more
            except ObjectDamaged as exc:
                self._damaged(exc)
                continue
            self.restore_points.add(point.id)
            yield from self._point(point)
        for export_id in ids_under(repo.backend.list(EXPORT_PREFIX), EXPORT_PREFIX):
            try:
                export = repo.read_export(export_id)
            except ExportNotFound:
                continue
            except ObjectDamaged as exc:
                self._damaged(exc)
                continue
            self.exports.add(export.id)
            for stream in export.streams:
                yield from self._stream(Referrer(EXPORT, export.id, stream=stream.name), stream)

    def _point(self, point: RestorePoint) -> Iterator[tuple[Referrer, set[bytes]]]:
        for disk in point.disks:
            referrer = Referrer(RESTORE_POINT, point.id, disk=disk)
            self.index_keys.add(disk.index_key)
            try:
                index = self._repo.read_index(disk)
            except ObjectDamaged as exc:
                self._damaged(exc, referrer.describe())
                continue
            self.disks += 1
            yield referrer, index.unique_ids()
        for stream in point.streams:
            yield from self._stream(Referrer(RESTORE_POINT, point.id, stream=stream.name), stream)

    def _stream(self, referrer: Referrer, stream: StreamRecord) -> Iterator[tuple[Referrer, set[bytes]]]:
        whole = True
        for segment in stream.segments:
            self.index_keys.add(segment.key)
            try:
                index = self._repo.read_stream_segment(segment)
            except ObjectDamaged as exc:
                self._damaged(exc, referrer.describe())
                whole = False
                continue  # the other segments' chunks are still worth marking and checking
            yield referrer, index.unique_ids()
        if whole:
            self.streams += 1
