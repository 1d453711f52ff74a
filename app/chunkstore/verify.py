"""Repository verification: read back every referenced chunk once and check it end to end.

Each chunk goes through the same path as a restore (fetch, authenticate, decompress, re-hash), so a
clean report means every restore point and every export can be restored. What is checked is what GC
keeps alive (``walk.ManifestWalk``): the disks and streams of restore points and the streams of exports.
Problems are reported with the disks and streams they affect, which needs a second pass over the
indexes only when something is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from app.chunkstore.errors import ChunkDamaged, ChunkMissing
from app.chunkstore.repository import Repository
from app.chunkstore.tuning import tune_malloc
from app.chunkstore.walk import EXPORT, ManifestWalk

DEFAULT_WORKERS = 4


@dataclass(frozen=True, slots=True)
class AffectedDisk:
    restore_point_id: str
    disk_key: str
    disk_label: str


@dataclass(frozen=True, slots=True)
class AffectedStream:
    """A stream that cannot be restored: of a restore point, or (``export_id`` set) of an export."""

    stream_name: str
    restore_point_id: str | None = None
    export_id: str | None = None


@dataclass(frozen=True, slots=True)
class ChunkProblem:
    chunk_id: bytes
    kind: str  # "damaged" or "missing"
    detail: str
    affected: tuple[AffectedDisk, ...] = ()
    streams: tuple[AffectedStream, ...] = ()

    @property
    def chunk_hex(self) -> str:
        return self.chunk_id.hex()

    @property
    def restore_point_ids(self) -> tuple[str, ...]:
        """Restore points that cannot be fully restored: through a disk or a stream."""
        ids = {a.restore_point_id for a in self.affected}
        ids.update(s.restore_point_id for s in self.streams if s.restore_point_id is not None)
        return tuple(sorted(ids))

    @property
    def export_ids(self) -> tuple[str, ...]:
        return tuple(sorted({s.export_id for s in self.streams if s.export_id is not None}))


@dataclass(slots=True)
class VerifyReport:
    restore_points: int = 0
    disks: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    damaged: list[ChunkProblem] = field(default_factory=list)
    missing: list[ChunkProblem] = field(default_factory=list)
    damaged_objects: list[str] = field(default_factory=list)  # unreadable manifests/indexes, by message
    streams: int = 0  # streams (of restore points and exports) whose index was read
    exports: int = 0

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.missing or self.damaged_objects)

    @property
    def affected_restore_points(self) -> list[str]:
        return sorted({rp for p in (*self.damaged, *self.missing) for rp in p.restore_point_ids})

    @property
    def affected_exports(self) -> list[str]:
        return sorted({e for p in (*self.damaged, *self.missing) for e in p.export_ids})


def verify(
    repo: Repository,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    tune_malloc()
    report = VerifyReport()
    referenced: set[bytes] = set()
    walk = ManifestWalk(repo, on_damaged=report.damaged_objects.append)
    for _referrer, ids in walk:
        referenced.update(ids)
    report.restore_points = len(walk.restore_points)
    report.exports = len(walk.exports)
    report.disks = walk.disks
    report.streams = walk.streams

    problems: dict[bytes, tuple[str, str]] = {}
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="chunkstore-verify") as pool:
        window: set[Future[tuple[bytes, int, str, str]]] = set()
        for chunk_id in referenced:
            if len(window) >= 2 * workers:
                finished, window = _drain(window)
                _collect(finished, report, problems)
                if progress is not None:
                    progress(report)
            window.add(pool.submit(_check, repo, chunk_id))
        _collect(window, report, problems)

    if problems:
        _report_problems(repo, report, problems)
    return report


def _report_problems(repo: Repository, report: VerifyReport, problems: dict[bytes, tuple[str, str]]) -> None:
    """Second walk: name the disks and streams each bad chunk belongs to (each once, in walk order)."""
    disks: dict[bytes, dict[AffectedDisk, None]] = {c: {} for c in problems}
    streams: dict[bytes, dict[AffectedStream, None]] = {c: {} for c in problems}
    for referrer, ids in ManifestWalk(repo, on_damaged=lambda _message: None):
        for chunk_id in ids & problems.keys():
            if referrer.disk is not None:
                disk = referrer.disk
                disks[chunk_id][AffectedDisk(referrer.owner_id, disk.key, disk.label)] = None
            else:
                name, owner, in_export = str(referrer.stream), referrer.owner_id, referrer.kind == EXPORT
                affected = AffectedStream(name, None if in_export else owner, owner if in_export else None)
                streams[chunk_id][affected] = None
    for chunk_id, (kind, detail) in sorted(problems.items()):
        problem = ChunkProblem(chunk_id, kind, detail, tuple(disks[chunk_id]), tuple(streams[chunk_id]))
        (report.damaged if kind == "damaged" else report.missing).append(problem)


def _check(repo: Repository, chunk_id: bytes) -> tuple[bytes, int, str, str]:
    try:
        return chunk_id, len(repo.get_chunk(chunk_id)), "", ""
    except ChunkMissing as exc:
        return chunk_id, 0, "missing", str(exc)
    except ChunkDamaged as exc:
        return chunk_id, 0, "damaged", exc.detail


def _drain(
    window: set[Future[tuple[bytes, int, str, str]]],
) -> tuple[set[Future[tuple[bytes, int, str, str]]], set[Future[tuple[bytes, int, str, str]]]]:
    done, not_done = wait(window, return_when=FIRST_COMPLETED)
    return done, not_done


def _collect(
    finished: set[Future[tuple[bytes, int, str, str]]],
    report: VerifyReport,
    problems: dict[bytes, tuple[str, str]],
) -> None:
    for future in finished:
        chunk_id, size, kind, detail = future.result()
        report.chunks_checked += 1
        report.bytes_checked += size
        if kind:
            problems[chunk_id] = (kind, detail)
