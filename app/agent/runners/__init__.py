"""Job runners by kind: what a proxy knows how to do."""

from __future__ import annotations

from app.agent.runtime import Runner


def build_runners() -> dict[str, Runner]:
    from app.agent.runners.backup import BackupRunner
    from app.agent.runners.cleanup import SnapshotCleanupRunner
    from app.agent.runners.restore import RestoreRunner

    return {"backup": BackupRunner(), "restore": RestoreRunner(), "snapshot_cleanup": SnapshotCleanupRunner()}
