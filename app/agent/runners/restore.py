"""Full-VM restore from a restore point, over the original VM or as a new VM.

Every chunk is verified as it is read. Before anything is written, the runner checks that
every chunk the point needs is present, so that a missing chunk fails the restore before a VM
is touched. A new VM that cannot be completed is deleted: nothing half-restored stays
registered as if it were good.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

from app.agent.cleanup import endpoint_of
from app.agent.repositories import RepositoryCache
from app.agent.runtime import JobRuntime
from app.chunkstore import (
    ZERO_ID,
    BackupCancelled,
    ChunkError,
    ChunkstoreError,
    DiskIndex,
    Repository,
    RestorePoint,
    RestorePointNotFound,
    iter_disk,
)
from app.contracts.agent import CompleteRequest, JobAssignment, RestoreResult
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.restore import (
    create_vm_from_config,
    destroy_vm,
    power_on_vm,
    prepare_original_vm_for_restore,
    upload_disk,
)
from app.vadp.session import VCenterSession, open_session
from app.vadp.types import VmHandle
from app.vadp.vms import find_vm

log = logging.getLogger(__name__)


class RestoreFailed(Exception):
    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class RestoreRunner:
    def __init__(self, repositories: RepositoryCache | None = None, workers: int = 4) -> None:
        self.repositories = repositories or RepositoryCache()
        self.workers = workers

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        try:
            result = self._run(assignment, runtime)
        except BackupCancelled:
            return CompleteRequest(outcome="cancelled", error="cancelled", warnings=runtime.warnings)
        except RestoreFailed as exc:
            kind = "transient" if exc.transient else "permanent"
            return CompleteRequest(
                outcome="failed", error=str(exc), error_kind=kind, warnings=runtime.warnings
            )
        except VCenterError as exc:
            kind = "transient" if exc.transient else "permanent"
            return CompleteRequest(
                outcome="failed", error=exc.message, error_kind=kind, warnings=runtime.warnings
            )
        except ChunkstoreError as exc:  # the repository failed while the disks were written
            return CompleteRequest(
                outcome="failed",
                error=f"repository: {exc}",
                error_kind="transient",
                warnings=runtime.warnings,
            )
        return CompleteRequest(outcome="succeeded", restore=result, warnings=runtime.warnings)

    def _run(self, a: JobAssignment, runtime: JobRuntime) -> RestoreResult:
        params = a.restore
        assert params is not None
        repo = self.repositories.get(a.repository)
        point_id = str(params.restore_point_id)
        runtime.report("reading restore point")
        try:
            point = repo.read_restore_point(point_id)
            indexes = [repo.read_index(disk) for disk in point.disks]
        except RestorePointNotFound as exc:
            raise RestoreFailed(f"restore point {point_id} is not in the repository") from exc
        except ChunkstoreError as exc:
            raise RestoreFailed(f"restore point {point_id} cannot be read: {exc}") from exc
        self._check_chunks_present(repo, point, indexes)
        with open_session(endpoint_of(a.vcenter_access())) as session:
            if params.target == "new":
                return self._to_new_vm(session, repo, a, runtime, point, indexes)
            return self._to_original(session, repo, a, runtime, point, indexes)

    def _check_chunks_present(self, repo: Repository, point: RestorePoint, indexes: list[DiskIndex]) -> None:
        needed = {cid for index in indexes for cid in index.unique_ids() if cid != ZERO_ID}
        missing = repo.missing(needed)
        if missing:
            example = sorted(missing)[0].hex()
            raise RestoreFailed(
                f"restore point {point.id} is damaged: {len(missing)} chunk(s) are missing from the "
                f"repository (e.g. {example}); nothing was written. Run 'vmrecovery repository verify' "
                "and restore an older point."
            )

    def _to_new_vm(
        self,
        session: VCenterSession,
        repo: Repository,
        a: JobAssignment,
        runtime: JobRuntime,
        point: RestorePoint,
        indexes: list[DiskIndex],
    ) -> RestoreResult:
        params = a.restore
        assert params is not None and params.new_name and params.host_moid and params.datastore_moid
        runtime.report("creating VM")
        created = create_vm_from_config(
            session, point.vm_config, params.new_name, params.host_moid, params.datastore_moid
        )
        for warning in created.warnings:
            runtime.warn(warning)
        try:
            self._write_disks(session, repo, runtime, created.handle, point, indexes, created.disk_keys)
            if params.power_on:
                runtime.report("powering on")
                power_on_vm(session, created.handle)
        except BaseException as exc:
            log.warning(
                "restore into new VM %s failed (%s); deleting the incomplete VM", params.new_name, exc
            )
            left = "the incomplete VM was deleted"
            try:
                destroy_vm(session, created.handle)
            except VCenterError as cleanup_error:
                left = f"the incomplete VM {params.new_name!r} could not be deleted: delete it by hand"
                runtime.warn(
                    f"the incomplete VM {params.new_name!r} could not be deleted ({cleanup_error.message}); "
                    "delete it by hand"
                )
            if isinstance(exc, ChunkError):  # the point is damaged: for good, unlike a repository down
                raise RestoreFailed(
                    f"restore point {point.id} is damaged ({exc}); {left}; restore another point"
                ) from exc
            raise
        return RestoreResult(vm_moid=created.handle.moid, vm_name=created.name)

    def _to_original(
        self,
        session: VCenterSession,
        repo: Repository,
        a: JobAssignment,
        runtime: JobRuntime,
        point: RestorePoint,
        indexes: list[DiskIndex],
    ) -> RestoreResult:
        params = a.restore
        assert params is not None
        try:
            facts = find_vm(session, a.vm.instance_uuid)
        except VCenterError as exc:
            if exc.kind is VCenterErrorKind.NOT_FOUND:
                raise RestoreFailed(
                    f"VM '{a.vm.name}' no longer exists; restore the point as a new VM instead"
                ) from exc
            raise
        runtime.report("preparing VM")
        try:
            facts = prepare_original_vm_for_restore(session, facts.handle, params.force)
        except VCenterError as exc:
            if exc.kind is VCenterErrorKind.INVALID_STATE:
                raise RestoreFailed(exc.message) from exc
            raise
        current_keys = {disk.key for disk in facts.disks}
        key_map = {int(disk.key): int(disk.key) for disk in point.disks}
        missing = [key for key in key_map if key not in current_keys]
        if missing:
            raise RestoreFailed(
                f"VM '{facts.name}' no longer has disk(s) {missing} that the restore point holds; "
                "restore as a new VM instead"
            )
        try:
            self._write_disks(session, repo, runtime, facts.handle, point, indexes, key_map)
        except BackupCancelled:
            raise
        except ChunkstoreError as exc:
            raise overwrite_failed(exc, point.id, facts.name) from exc
        if params.power_on:
            runtime.report("powering on")
            power_on_vm(session, facts.handle)
        return RestoreResult(vm_moid=facts.handle.moid, vm_name=facts.name)

    def _write_disks(
        self,
        session: VCenterSession,
        repo: Repository,
        runtime: JobRuntime,
        vm: VmHandle,
        point: RestorePoint,
        indexes: list[DiskIndex],
        key_map: dict[int, int],
    ) -> None:
        total = sum(disk.size for disk in point.disks)
        written = 0
        for disk, index in zip(point.disks, indexes, strict=True):
            runtime.report(f"writing {disk.label}", bytes_total=total, bytes_read=written)
            pieces = iter_disk(repo, index, workers=self.workers)
            try:
                upload_disk(
                    session,
                    vm,
                    key_map[int(disk.key)],
                    _counted(pieces, runtime, total, written, disk.label),
                    disk.size,
                )
            except ChunkError as exc:
                # Still a ChunkError, so that each target says what it left behind.
                raise ChunkError(exc.chunk_id, f"disk {disk.label}: {exc}") from exc
            finally:
                pieces.close()
            written += disk.size
        runtime.report("restored", bytes_total=total, bytes_read=written)


def overwrite_failed(exc: ChunkstoreError, point_id: str, vm_name: str) -> RestoreFailed:
    """Why a restore over the original VM stopped while writing its disks.

    A damaged point is for good: the user must restore another one. Any other repository error
    (an object store down) says nothing about the point, so the restore is retried."""
    if isinstance(exc, ChunkError):
        return RestoreFailed(
            f"restore point {point_id} is damaged ({exc}); VM '{vm_name}' was left powered off with "
            "incompletely restored disks: restore another point"
        )
    return RestoreFailed(
        f"the repository could not be read ({exc}); VM '{vm_name}' was left powered off with "
        "incompletely restored disks until the restore is retried",
        transient=True,
    )


def _counted(
    pieces: Iterable[bytes], runtime: JobRuntime, total: int, before: int, label: str
) -> Iterator[bytes]:
    done = before
    for piece in pieces:
        if runtime.cancel.is_set():
            raise BackupCancelled()
        done += len(piece)
        runtime.report(f"writing {label}", bytes_total=total, bytes_read=done)
        yield piece
