"""Offsite copy of one restore point: the chunks the offsite repository lacks, its indexes, its
manifest last (``app.chunkstore.copy``). Every chunk is verified before it leaves."""

from __future__ import annotations

from app.agent.repositories import RepositoryCache
from app.agent.runtime import JobRuntime
from app.chunkstore import ChunkstoreError
from app.chunkstore.copy import CopyCancelled, CopyStats, copy_restore_point
from app.chunkstore.errors import ChunkError, RestorePointNotFound
from app.contracts.agent import CompleteRequest, JobAssignment, OffsiteCopyResult


class OffsiteCopyRunner:
    def __init__(self, repositories: RepositoryCache | None = None, workers: int = 8) -> None:
        self.repositories = repositories or RepositoryCache()
        self.workers = workers

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        params = assignment.offsite_copy
        assert params is not None

        def progress(stats: CopyStats) -> None:
            runtime.report("copying", bytes_new=stats.bytes_copied, bytes_stored=stats.bytes_copied)

        try:
            source = self.repositories.get(assignment.repository)
            target = self.repositories.get(params.target)
            runtime.report("copying", urgent=True)
            stats = copy_restore_point(
                source,
                target,
                str(params.restore_point_id),
                workers=self.workers,
                progress=progress,
                cancel=runtime.cancel,
            )
        except CopyCancelled:
            return CompleteRequest(outcome="cancelled", error="cancelled", warnings=runtime.warnings)
        except RestorePointNotFound as exc:
            return CompleteRequest(
                outcome="failed",
                error=f"the restore point is not in the onsite repository any more ({exc})",
                error_kind="permanent",
                warnings=runtime.warnings,
            )
        except ChunkError as exc:
            # Damage at the source is not copied; retrying will not repair it.
            return CompleteRequest(
                outcome="failed",
                error=f"the onsite copy is damaged, nothing was copied offsite: {exc}",
                error_kind="permanent",
                warnings=runtime.warnings,
            )
        except (ChunkstoreError, OSError) as exc:
            return CompleteRequest(
                outcome="failed",
                error=f"offsite copy: {exc}",
                error_kind="transient",
                warnings=runtime.warnings,
            )
        return CompleteRequest(
            outcome="succeeded",
            offsite_copy=OffsiteCopyResult(
                chunks=stats.chunks, chunks_copied=stats.chunks_copied, bytes_copied=stats.bytes_copied
            ),
            warnings=runtime.warnings,
        )
