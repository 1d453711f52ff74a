"""Garbage collection: mark every chunk a live manifest references, sweep the rest once old enough.

Live manifests are those of restore points (their disks and their streams) and of exports (their
streams); a stream's chunks are marked by reading every segment of its index. A backup writes its
chunks long before its manifest, so a chunk that no manifest references yet may belong to a backup
still running. Sweeping only unreferenced chunks older than ``grace`` (by the backend's modification
time) keeps them (the Proxmox Backup Server approach); the grace period must exceed the longest backup.
The mark phase must be complete before anything is deleted: one unreadable manifest or index aborts the
GC rather than freeing chunks it might still reference.

Index objects no manifest references are swept the same way, after the grace period: those of restore
points and exports that never got a manifest (crashed before commit), and those a live manifest does
not list (the segments of a stream that failed and was released while the rest was committed).
Manifests are written once, so an index object a live manifest does not list never becomes referenced.

A running backup that reuses a chunk already stored (found by the dedup check, or taken over from
the previous index on the CBT path) touches it at that moment (``Backend.touch_many``), so that the
chunk is young for the sweep even if nothing referenced it before: GC can run while backups run.
A touch can also land between the sweep's look at a chunk's time and its removal; the two are one
backend step (``Backend.delete_if_older``): on a filesystem the chunk is moved aside, looked at
again and put back if it was touched; S3 offers no such step and keeps a window of one request.

Exports and streams are unknown to versions before them: an older GC would free their chunks. Manifests
with streams use format 2 so that an older GC fails on them instead; exports have no such guard, so GC
must only run from versions that know exports.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.chunkstore.backend import ObjectStat
from app.chunkstore.errors import ObjectMissing
from app.chunkstore.ids import ZERO_ID, chunk_key
from app.chunkstore.layout import (
    EXPORT_INDEX_PREFIX,
    INDEX_PREFIX,
    export_key,
    manifest_key,
)
from app.chunkstore.repository import Repository
from app.chunkstore.walk import ManifestWalk

DEFAULT_GRACE = timedelta(hours=24)


@dataclass(slots=True)
class GcReport:
    restore_points: int = 0
    chunks_referenced: int = 0
    chunks_deleted: int = 0
    bytes_freed: int = 0
    chunks_kept_young: int = 0  # unreferenced but within the grace period
    indexes_deleted: int = 0  # orphan index objects (uncommitted, or not listed by their manifest)
    dry_run: bool = False
    exports: int = 0
    streams: int = 0  # streams of restore points and exports whose chunks were marked
    sweeps_recovered: int = 0  # objects an interrupted sweep had left aside, put back


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
    if not dry_run:
        # A sweep that stopped between moving a chunk aside and its last look hid it; a backup
        # may have touched it just before and reference it.
        report.sweeps_recovered = repo.backend.recover_interrupted_sweeps()

    # Mark. Errors propagate (a strict walk): never sweep on an incomplete mark.
    referenced: set[bytes] = set()
    walk = ManifestWalk(repo)
    for _referrer, ids in walk:
        referenced.update(ids)
    referenced.discard(ZERO_ID)
    report.restore_points = len(walk.restore_points)
    report.exports = len(walk.exports)
    report.streams = walk.streams
    report.chunks_referenced = len(referenced)

    # Sweep chunks. The age check and the removal are one backend step: a backup that touched
    # the chunk meanwhile (it found it stored and will reference it) keeps it.
    for chunk_id in list(repo.chunk_ids()):
        if chunk_id in referenced:
            continue
        if dry_run:
            try:
                found: ObjectStat | None = repo.backend.stat(chunk_key(chunk_id))
            except ObjectMissing:
                continue
        else:
            found = repo.delete_chunk_if_older(chunk_id, cutoff)
        if found is None:
            continue
        if found.modified > cutoff:
            report.chunks_kept_young += 1
            continue
        report.chunks_deleted += 1
        report.bytes_freed += found.size

    # Sweep index objects no manifest references.
    for prefix, live, key_of in (
        (INDEX_PREFIX, walk.restore_points, manifest_key),
        (EXPORT_INDEX_PREFIX, walk.exports, export_key),
    ):
        report.indexes_deleted += _sweep_indexes(repo, prefix, live, walk.index_keys, key_of, cutoff, dry_run)
    return report


def _sweep_indexes(
    repo: Repository,
    prefix: str,
    live: set[str],
    referenced: set[str],
    manifest_key_of: Callable[[str], str],
    cutoff: datetime,
    dry_run: bool,
) -> int:
    """Delete the old index objects under ``prefix`` that no manifest read by the mark lists."""
    deleted = 0
    for key in list(repo.backend.list(prefix)):
        parts = key.split("/")
        if len(parts) != 3 or key in referenced:
            continue
        owner = parts[1]
        try:
            owner_manifest = manifest_key_of(owner)
        except ValueError:
            continue  # not a name this repository writes: not ours to remove
        try:
            stat = repo.backend.stat(key)
        except ObjectMissing:
            continue
        if stat.modified > cutoff:
            continue
        # An owner whose manifest was read lists every index object it will ever have (manifests are
        # written once). Any other owner may have been committed since the mark: check again.
        if owner not in live and repo.backend.exists(owner_manifest):
            continue
        if not dry_run:
            repo.backend.delete(key)
        deleted += 1
    return deleted
