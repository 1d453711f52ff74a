"""What application backups and restores hand back to the agent, and how streams are named.

A stream's name is a label inside one restore point; its metadata is the truth a restore reads (which
engine, which database, which format). Names follow ``<engine>/<database>`` for the default instance
so that a restore point reads naturally ("postgresql/sales", "mysql/shop", "files/etc").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from app.chunkstore.backup import BackupStats
from app.chunkstore.manifest import StreamRecord

DEFAULT_INSTANCE = "default"
#: Warnings kept in a stream's metadata (the full list is in the result, for the job's report).
METADATA_WARNINGS = 100


def database_stream_name(engine: str, database: str, instance: str = DEFAULT_INSTANCE) -> str:
    """``postgresql/sales``; ``postgresql@replica2/sales`` for an instance other than the default."""
    prefix = engine if instance == DEFAULT_INSTANCE else f"{engine}@{instance}"
    return f"{prefix}/{database}"


def files_stream_name(label: str) -> str:
    """``files/<label>``: one file set of a restore point."""
    return f"files/{label}"


@dataclass(frozen=True, slots=True)
class AppBackupResult:
    """One stream recorded in the restore point being written (not committed: the caller commits)."""

    stream: StreamRecord
    stats: BackupStats
    warnings: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.stream.name


@dataclass(frozen=True, slots=True)
class DatabaseRestoreResult:
    database: str  # the name it now has
    replaced: bool  # an existing database of that name was replaced
    bytes_read: int  # stream bytes fed to the restore tool
    warnings: tuple[str, ...] = ()


@dataclass(slots=True)
class FilesRestoreResult:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)
