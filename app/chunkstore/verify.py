"""Repository verification: read back every referenced chunk once and check it end to end.

Each chunk goes through the same path as a restore (fetch, authenticate, decompress, re-hash), so a
clean report means every restore point can be restored. Problems are reported with the restore points
and disks they affect, which needs a second pass over the indexes only when something is wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from app.chunkstore.errors import ChunkDamaged, ChunkMissing, ObjectDamaged, RestorePointNotFound
from app.chunkstore.index import DiskIndex
from app.chunkstore.manifest import DiskRecord, RestorePoint
from app.chunkstore.repository import Repository
from app.chunkstore.tuning import tune_malloc

DEFAULT_WORKERS = 4


@dataclass(frozen=True, slots=True)
class AffectedDisk:
    restore_point_id: str
    disk_key: str
    disk_label: str


@dataclass(frozen=True, slots=True)
class ChunkProblem:
    chunk_id: bytes
    kind: str  # "damaged" or "missing"
    detail: str
    affected: tuple[AffectedDisk, ...] = ()

    @property
    def chunk_hex(self) -> str:
        return self.chunk_id.hex()

    @property
    def restore_point_ids(self) -> tuple[str, ...]:
        return tuple(sorted({a.restore_point_id for a in self.affected}))


@dataclass(slots=True)
class VerifyReport:
    restore_points: int = 0
    disks: int = 0
    chunks_checked: int = 0
    bytes_checked: int = 0
    damaged: list[ChunkProblem] = field(default_factory=list)
    missing: list[ChunkProblem] = field(default_factory=list)
    damaged_objects: list[str] = field(default_factory=list)  # unreadable manifests/indexes, by message

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.missing or self.damaged_objects)

    @property
    def affected_restore_points(self) -> list[str]:
        return sorted({rp for p in (*self.damaged, *self.missing) for rp in p.restore_point_ids})


def verify(
    repo: Repository,
    *,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    tune_malloc()
    report = VerifyReport()
    referenced: set[bytes] = set()
    for _point, _disk, index in _indexes(repo, report):
        referenced.update(index.unique_ids())

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
        affected: dict[bytes, list[AffectedDisk]] = {c: [] for c in problems}
        for point, disk, index in _indexes(repo, None):
            for chunk_id in index.unique_ids() & problems.keys():
                affected[chunk_id].append(AffectedDisk(point.id, disk.key, disk.label))
        for chunk_id, (kind, detail) in sorted(problems.items()):
            problem = ChunkProblem(chunk_id, kind, detail, tuple(affected[chunk_id]))
            (report.damaged if kind == "damaged" else report.missing).append(problem)
    return report


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


def _indexes(
    repo: Repository, report: VerifyReport | None
) -> Iterator[tuple[RestorePoint, DiskRecord, DiskIndex]]:
    """Every readable index; unreadable manifests and indexes are recorded, not fatal."""
    for restore_point_id in repo.list_restore_points():
        try:
            point = repo.read_restore_point(restore_point_id)
        except RestorePointNotFound:
            continue  # deleted while we were verifying
        except ObjectDamaged as exc:
            if report is not None:
                report.damaged_objects.append(str(exc))
            continue
        if report is not None:
            report.restore_points += 1
        for disk in point.disks:
            try:
                index = repo.read_index(disk)
            except ObjectDamaged as exc:
                if report is not None:
                    report.damaged_objects.append(f"{exc} (restore point {point.id!r}, disk {disk.key!r})")
                continue
            if report is not None:
                report.disks += 1
            yield point, disk, index
