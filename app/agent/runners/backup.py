"""Image-level backup of one VM through VADP into the repository.

space check → CBT on → snapshot (quiesced if asked and possible) → per disk: changed areas
(CBT) or whole disk → chunk, dedup, compress, write → manifest (last) → snapshot removed,
always, in ``finally``. Disk data flows from the datastore to the repository; the service
only sees the summary.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from app.agent.cleanup import endpoint_of
from app.agent.guest_freeze import GuestFreeze
from app.agent.repositories import RepositoryCache
from app.agent.runtime import JobRuntime
from app.chunkstore import (
    BackupCancelled,
    BackupStats,
    ChunkstoreError,
    DiskIndex,
    DiskRecord,
    Repository,
    RestorePoint,
    RestorePointNotFound,
    backup_disk,
)
from app.contracts.agent import (
    SNAPSHOT_NAME_PREFIX,
    BackupResult,
    CompleteRequest,
    DiskResult,
    JobAssignment,
    snapshot_attempt,
)
from app.domain.space import SpaceStatus, free_percent, space_status
from app.vadp.cbt import ChangedBlockTracker, VimChangedBlockTracker
from app.vadp.datastore_http import DatastoreHttpTransport
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession, open_session
from app.vadp.snapshots import create_snapshot, remove_snapshot, remove_snapshots_named
from app.vadp.transport import DiskTransport
from app.vadp.types import SnapshotHandle, VmDisk, VmFacts
from app.vadp.vmconfig import capture_vm_config
from app.vadp.vms import datastore_space, disk_change_id, enable_cbt, find_vm, snapshot_disks

log = logging.getLogger(__name__)


#: Reads a disk's CBT change id as of a snapshot (vCenter's; tests of the CBT path inject theirs).
ChangeIdReader = Callable[[VCenterSession, SnapshotHandle, int], str | None]


class Skip(Exception):
    """The backup must not start (e.g. datastore below 10% free): ends as ``skipped``."""


class BackupRunner:
    def __init__(
        self,
        repositories: RepositoryCache | None = None,
        transport: DiskTransport | None = None,
        cbt: ChangedBlockTracker | None = None,
        workers: int = 4,
        change_ids: ChangeIdReader = disk_change_id,
    ) -> None:
        self.repositories = repositories or RepositoryCache()
        self.transport = transport or DatastoreHttpTransport()
        self.cbt = cbt or VimChangedBlockTracker()
        self.workers = workers
        self.change_ids = change_ids

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        try:
            result = self._run(assignment, runtime)
        except Skip as exc:
            return CompleteRequest(
                outcome="skipped", error=str(exc), error_kind="permanent", warnings=runtime.warnings
            )
        except BackupCancelled:
            return CompleteRequest(outcome="cancelled", error="cancelled", warnings=runtime.warnings)
        except VCenterError as exc:
            kind = "transient" if exc.transient else "permanent"
            return CompleteRequest(
                outcome="failed", error=exc.message, error_kind=kind, warnings=runtime.warnings
            )
        except ChunkstoreError as exc:
            return CompleteRequest(
                outcome="failed",
                error=f"repository: {exc}",
                error_kind="transient",
                warnings=runtime.warnings,
            )
        return CompleteRequest(outcome="succeeded", backup=result, warnings=runtime.warnings)

    def _run(self, a: JobAssignment, runtime: JobRuntime) -> BackupResult:
        params = a.backup
        assert params is not None
        repo = self.repositories.get(a.repository)
        runtime.report("connecting")
        with open_session(endpoint_of(a.vcenter_access())) as session:
            try:
                vm = find_vm(session, a.vm.instance_uuid)
            except VCenterError as exc:
                if exc.kind is VCenterErrorKind.NOT_FOUND:
                    raise VCenterError(
                        exc.kind,
                        f"VM '{a.vm.name}' ({a.vm.instance_uuid}) no longer exists in vCenter",
                        transient=False,
                    ) from exc
                raise
            self._check_space(session, vm, runtime)
            cbt_was_on = self._ensure_cbt(session, vm, runtime)
            # Only one backup of a VM runs at a time, so every snapshot of ours on it is a
            # leftover: of an earlier attempt of this job (a lapsed lease, a snapshot task that
            # failed after vCenter took it, another proxy's), or of an earlier job. A snapshot
            # taken on top of one would leave the disks as deltas that cannot be read whole.
            remove_snapshots_named(
                session, vm.handle, SNAPSHOT_NAME_PREFIX, keep=lambda name: _later_attempt(name, a)
            )
            quiesce = params.quiesce and vm.power_state == "poweredOn"
            if params.quiesce and not quiesce:
                runtime.warn("the VM is powered off: no quiescing needed, the backup is consistent as it is")
            freeze = None
            if quiesce and params.guest is not None:
                runtime.report("freezing applications", urgent=True)
                freeze = GuestFreeze(runtime, params.guest.quiesce.freeze_timeout_s)
                freeze.freeze()
            runtime.report("snapshot")
            try:
                snap = create_snapshot(
                    session,
                    vm.handle,
                    params.snapshot_name,
                    description=f"VM Recovery backup, job {a.job_id}; removed when the backup ends",
                    quiesce=quiesce,
                )
            except VCenterError:
                # The task may have failed here (a timeout, a lost poll) and still succeed in
                # vCenter: look for the snapshot once rather than leave it to the next backup.
                with contextlib.suppress(VCenterError):
                    remove_snapshots_named(session, vm.handle, params.snapshot_name)
                raise
            finally:
                held = freeze.release() if freeze is not None else False
            if snap.warning:
                runtime.warn(snap.warning)
            try:
                created_at, disks = self._back_up_disks(
                    session, repo, a, runtime, vm, snap.snapshot, trust_cbt=cbt_was_on
                )
                if snap.powered_off:  # as of the snapshot, not of the look-up before it
                    consistency = "application"
                elif freeze is not None and not freeze.froze_nothing:
                    # The guest's freeze decides: it flushed the applications.
                    consistency = "application" if held else "crash"
                else:
                    consistency = "application" if snap.quiesced else "crash"
                return BackupResult(
                    restore_point_id=params.restore_point_id,
                    created_at=created_at,
                    consistency=consistency,
                    disks=disks,
                )
            finally:
                runtime.report("removing snapshot")
                self._remove_snapshot(session, snap.snapshot, runtime)

    def _check_space(self, session: VCenterSession, vm: VmFacts, runtime: JobRuntime) -> None:
        runtime.report("checking datastore space")
        for name, capacity, free in datastore_space(session, vm.handle):
            status = space_status(capacity, free)
            percent = free_percent(capacity, free)
            if status is SpaceStatus.CRITICAL:
                raise Skip(
                    f"datastore {name} has {percent:.1f}% free (below 10%): the backup was not started, "
                    "because a snapshot could fill the datastore; free space on it or move the VM"
                )
            if status is SpaceStatus.WARNING:
                runtime.warn(f"datastore {name} has {percent:.1f}% free (below 15%)")

    def _ensure_cbt(self, session: VCenterSession, vm: VmFacts, runtime: JobRuntime) -> bool:
        """Whether CBT was on before this backup; if not, it is enabled for the next one. Writes
        made while it was off were never tracked, so this backup must not ask it for changes."""
        if vm.cbt_enabled:
            return True
        try:
            if enable_cbt(session, vm.handle):
                runtime.warn(
                    "Changed Block Tracking was off and has been enabled; this backup reads whole disks"
                )
        except VCenterError as exc:
            runtime.warn(f"could not enable Changed Block Tracking ({exc.message}); whole disks are read")
        return False

    def _previous(self, repo: Repository, a: JobAssignment, runtime: JobRuntime) -> RestorePoint | None:
        assert a.backup is not None
        if a.backup.previous is None:
            return None
        try:
            return repo.read_restore_point(str(a.backup.previous.id))
        except RestorePointNotFound:
            runtime.warn("the previous restore point is missing from the repository; reading whole disks")
            return None
        except ChunkstoreError as exc:
            # A damaged previous point must not stop every later backup: read whole disks, and
            # the new point starts a sound chain.
            runtime.warn(f"the previous restore point cannot be read ({exc}); reading whole disks")
            return None

    @staticmethod
    def _previous_index(
        repo: Repository, record: DiskRecord, label: str, runtime: JobRuntime
    ) -> DiskIndex | None:
        try:
            return repo.read_index(record)
        except ChunkstoreError as exc:
            runtime.warn(f"the previous index of {label} cannot be read ({exc}); reading it whole")
            return None

    @staticmethod
    def _snapshotted(disks: tuple[VmDisk, ...], vm: VmFacts, runtime: JobRuntime) -> list[VmDisk]:
        """The disks the snapshot holds. An independent disk is not part of a snapshot: while the
        VM runs, its file is live (locked, or read torn), so it is left out with a warning, as
        VADP backup products do; a powered-off VM's files are still and are read."""
        if vm.power_state != "poweredOn":
            return list(disks)
        kept = []
        for disk in disks:
            if (disk.disk_mode or "").startswith("independent"):
                runtime.warn(
                    f"{disk.label} is an independent disk ({disk.disk_mode}), which snapshots do not "
                    "cover: it is not in this restore point; make it dependent to back it up"
                )
                continue
            kept.append(disk)
        if disks and not kept:
            # A point without data must not count as a backup (the VM would look protected).
            raise VCenterError(
                VCenterErrorKind.UNSUPPORTED,
                "every disk of the VM is independent, which snapshots do not cover: nothing can be "
                "backed up while it runs; make its disks dependent",
                transient=False,
            )
        return kept

    def _back_up_disks(
        self,
        session: VCenterSession,
        repo: Repository,
        a: JobAssignment,
        runtime: JobRuntime,
        vm: VmFacts,
        snapshot: SnapshotHandle,
        *,
        trust_cbt: bool = True,
    ) -> tuple[datetime, list[DiskResult]]:
        assert a.backup is not None
        runtime.report("capturing configuration")
        config = capture_vm_config(session, vm.handle)
        disks = self._snapshotted(snapshot_disks(session, snapshot), vm, runtime)
        previous = self._previous(repo, a, runtime) if trust_cbt else None
        previous_disks = {d.key: d for d in previous.disks} if previous else {}
        created_at = datetime.now(UTC)
        writer = repo.begin_restore_point(
            str(a.backup.restore_point_id),
            vm_config=config,
            metadata={
                "job_id": str(a.job_id),
                "vm_id": str(a.vm.id),
                "vm_name": a.vm.name,
                "instance_uuid": a.vm.instance_uuid,
            },
            created_at=created_at,
        )
        total = sum(d.capacity_bytes for d in disks)
        done = BackupStats()
        processed = 0
        results: list[DiskResult] = []
        for disk in disks:
            if runtime.cancel.is_set():
                raise BackupCancelled()
            change_id = self.change_ids(session, snapshot, disk.key)
            record = previous_disks.get(str(disk.key))
            previous_index: DiskIndex | None = None
            extents = None
            if record is not None and record.size == disk.capacity_bytes:
                previous_index = self._previous_index(repo, record, disk.label, runtime)
                if (
                    previous_index is not None
                    and record.change_id
                    and same_cbt_epoch(record.change_id, change_id)
                ):
                    extents = self.cbt.changed_areas(
                        session, vm.handle, snapshot, disk.key, disk.capacity_bytes, record.change_id
                    )
            if extents is None:
                previous_index = None  # no CBT: read everything, dedup keeps the stored bytes small
            runtime.report("reading disks", bytes_total=total)

            def progress(
                stats: BackupStats,
                base: BackupStats = done,
                covered: int = processed,
                label: str = disk.label,
                size: int = disk.capacity_bytes,
            ) -> None:
                # "Read" in job progress means disk bytes covered so far, read or unchanged
                # since the previous point, so that the percentage reaches 100 with CBT too.
                runtime.report(
                    f"reading {label}",
                    bytes_total=total,
                    bytes_read=covered + min(size, stats.chunks_done * repo.chunk_size),
                    bytes_new=base.bytes_new + stats.bytes_new,
                    bytes_stored=base.bytes_stored + stats.bytes_stored,
                )

            reader = self.transport.open(session, vm.handle, snapshot, disk)
            try:
                result = backup_disk(
                    repo,
                    reader,
                    disk.capacity_bytes,
                    changed_extents=extents,
                    previous_index=previous_index,
                    workers=self.workers,
                    progress=progress,
                    cancel=runtime.cancel,
                )
            finally:
                reader.close()
            writer.add_disk(key=str(disk.key), label=disk.label, index=result.index, change_id=change_id)
            stats = result.stats
            done.bytes_read += stats.bytes_read
            processed += disk.capacity_bytes
            done.bytes_new += stats.bytes_new
            done.bytes_stored += stats.bytes_stored
            results.append(
                DiskResult(
                    key=disk.key,
                    label=disk.label,
                    size=disk.capacity_bytes,
                    change_id=change_id,
                    bytes_read=stats.bytes_read,
                    bytes_new=stats.bytes_new,
                    bytes_stored=stats.bytes_stored,
                    chunks=stats.chunks_total,
                    chunks_new=stats.chunks_new,
                    chunks_zero=stats.chunks_zero,
                    used_cbt=extents is not None,
                )
            )
        runtime.report(
            "writing manifest",
            bytes_total=total,
            bytes_read=processed,
            bytes_new=done.bytes_new,
            bytes_stored=done.bytes_stored,
        )
        writer.commit()
        return created_at, results

    def _remove_snapshot(
        self, session: VCenterSession, snapshot: SnapshotHandle, runtime: JobRuntime
    ) -> None:
        for attempt in range(3):
            try:
                remove_snapshot(session, snapshot)
                return
            except VCenterError as exc:
                if exc.kind is VCenterErrorKind.NOT_FOUND:
                    return
                log.warning(
                    "removing snapshot %s failed (attempt %d): %s", snapshot.moid, attempt + 1, exc.message
                )
                last = exc.message
        runtime.warn(
            f"the backup snapshot could not be removed ({last}); the proxy retries at its next start"
        )


def same_cbt_epoch(previous: str | None, current: str | None) -> bool:
    """Whether changes since ``previous`` can be asked for: both disks have a change id, and
    where vSphere names the tracking epoch (``<epoch>/<sequence>``) it is the same one. A CBT
    reset or another disk behind the same key starts a new epoch: its answer would be wrong."""
    if not previous or not current:
        return False
    if "/" in previous and "/" in current:
        return previous.split("/", 1)[0] == current.split("/", 1)[0]
    return True


def _later_attempt(snapshot_name: str, a: JobAssignment) -> bool:
    """A snapshot of a later attempt of this very job: this worker was superseded while it was
    held up before its snapshot, and must not remove the one the current attempt reads."""
    attempt = snapshot_attempt(snapshot_name, a.job_id)
    return attempt is not None and attempt > a.attempt
