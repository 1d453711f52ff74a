"""Job runners by kind: what a proxy knows how to do."""

from __future__ import annotations

from app.agent.runtime import Runner


def build_runners() -> dict[str, Runner]:
    from app.agent.repositories import RepositoryCache
    from app.agent.runners.backup import BackupRunner
    from app.agent.runners.cleanup import SnapshotCleanupRunner
    from app.agent.runners.file_restore import FileRestoreRunner
    from app.agent.runners.offsite_copy import OffsiteCopyRunner
    from app.agent.runners.restore import RestoreRunner

    repositories = RepositoryCache()  # one open repository per location, shared by every runner
    return {
        "backup": BackupRunner(repositories),
        "restore": RestoreRunner(repositories),
        "snapshot_cleanup": SnapshotCleanupRunner(),
        "file_restore": FileRestoreRunner(repositories),
        "offsite_copy": OffsiteCopyRunner(repositories),
    }
