"""Garbage collection: mark every chunk referenced by a restore point, sweep the rest once old enough.

A backup writes its chunks long before its manifest, so a chunk that no manifest references yet may
belong to a backup still running. Sweeping only unreferenced chunks older than ``grace`` (by the
backend's modification time) keeps them (the Proxmox Backup Server approach); the grace period must
exceed the longest backup. Index objects of restore points that never got a manifest are swept the same
way. The mark phase must be complete before anything is deleted: one unreadable manifest or index
aborts the GC rather than freeing chunks it might still reference.

A running backup that reuses a chunk already stored (found by the dedup check, or taken over from
the previous index on the CBT path) touches it at that moment (``Backend.touch_many``), so that the
chunk is young for the sweep even if nothing referenced it before: GC can run while backups run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.chunkstore.errors import ObjectMissing
from app.chunkstore.ids import ZERO_ID, chunk_key
from app.chunkstore.repository import INDEX_PREFIX, Repository, manifest_key

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(slots=True)
class GcReport:
    restore_points: int = 0
    chunks_referenced: int = 0
    chunks_deleted: int = 0
    bytes_freed: int = 0
    chunks_kept_young: int = 0  # unreferenced but within the grace period
    indexes_deleted: int = 0  # orphan index objects (restore points that were never committed)
    dry_run: bool = False


def gc(
    repo: Repository,
    grace: timedelta = DEFAULT_GRACE,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
) -> GcReport:
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    cutoff = (now or datetime.now(UTC)) - grace
    report = GcReport(dry_run=dry_run)

    # Mark. Errors propagate: never sweep on an incomplete mark.
    referenced: set[bytes] = set()
    live_points = set(repo.list_restore_points())
    for restore_point_id in sorted(live_points):
        point = repo.read_restore_point(restore_point_id)
        report.restore_points += 1
        for disk in point.disks:
            referenced.update(repo.read_index(disk).unique_ids())
    referenced.discard(ZERO_ID)
    report.chunks_referenced = len(referenced)

    # Sweep chunks.
    for chunk_id in list(repo.chunk_ids()):
        if chunk_id in referenced:
            continue
        try:
            stat = repo.backend.stat(chunk_key(chunk_id))
        except ObjectMissing:
            continue
        if stat.modified > cutoff:
            report.chunks_kept_young += 1
            continue
        if not dry_run:
            repo.delete_chunk(chunk_id)
        report.chunks_deleted += 1
        report.bytes_freed += stat.size

    # Sweep index objects of restore points that have no manifest (crashed before commit).
    for key in list(repo.backend.list(INDEX_PREFIX)):
        parts = key.split("/")
        if len(parts) != 3 or parts[1] in live_points:
            continue
        try:
            stat = repo.backend.stat(key)
        except ObjectMissing:
            continue
        if stat.modified > cutoff:
            continue
        if repo.backend.exists(manifest_key(parts[1])):
            continue  # committed meanwhile
        if not dry_run:
            repo.backend.delete(key)
        report.indexes_deleted += 1
    return report
