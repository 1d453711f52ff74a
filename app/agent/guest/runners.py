"""The guest agent's job runners: application backups and restores inside the VM.

Each runs in a worker thread of the agent (the dumps and restores are subprocesses fed through
pipes) and turns what happened into a CompleteRequest the service can act on: a database that
failed to dump fails the whole job and commits nothing, so a restore point never claims to hold
a database it does not hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from app.agent.apps.errors import AppError, TargetExists, ToolMissing
from app.agent.apps.files_backup import backup_files
from app.agent.apps.files_restore import restore_files
from app.agent.apps.mysql_backup import backup_mysql_database, list_mysql_databases
from app.agent.apps.mysql_restore import restore_mysql_database
from app.agent.apps.postgres_backup import backup_postgres_database, list_postgres_databases
from app.agent.apps.postgres_restore import restore_postgres_database
from app.agent.apps.results import AppBackupResult as StreamBackupDone
from app.agent.apps.results import database_stream_name, files_stream_name
from app.agent.guest.config import ConfigError, GuestConfig
from app.agent.repositories import RepositoryCache
from app.agent.runtime import JobRuntime
from app.chunkstore import BackupStats, ChunkstoreError, Repository, RestorePointNotFound
from app.chunkstore.cdc import DEFAULT_PARAMS, CdcParams
from app.chunkstore.errors import BackupCancelled
from app.chunkstore.repository import RestorePointWriter
from app.contracts.agent import (
    AppBackupResult,
    ApplicationItemSpec,
    AppRestoreResult,
    CompleteRequest,
    JobAssignment,
    StreamResult,
)

log = logging.getLogger(__name__)

_PERMANENT = (ToolMissing, TargetExists, ConfigError)


def _failure(exc: Exception, runtime: JobRuntime, what: str) -> CompleteRequest:
    if runtime.cancel.is_set():
        # A cancel stops the dump or restore tool, which then fails: the job was cancelled, not
        # failed (a failure would alert the customer of a backup they stopped themselves).
        return CompleteRequest(outcome="cancelled", error="cancelled", warnings=runtime.warnings)
    kind = "permanent" if isinstance(exc, _PERMANENT) else "transient"
    return CompleteRequest(
        outcome="failed", error=f"{what}: {exc}", error_kind=kind, warnings=runtime.warnings
    )


class AppBackupRunner:
    """Dumps every database and file set of the policy's items into one application restore point."""

    def __init__(
        self, config: GuestConfig, repositories: RepositoryCache | None = None, workers: int = 4
    ) -> None:
        self.config = config
        self.repositories = repositories or RepositoryCache()
        self.workers = workers

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        params = assignment.app_backup
        assert params is not None
        try:
            repo = self.repositories.get(assignment.repository)
            chunking = self._previous_chunking(repo, assignment)
            created_at = datetime.now(UTC)
            writer = repo.begin_restore_point(
                str(params.restore_point_id),
                vm_config={},
                metadata={
                    "kind": "application",
                    "job_id": str(assignment.job_id),
                    "vm_id": str(assignment.vm.id),
                    "vm_name": assignment.vm.name,
                },
                created_at=created_at,
            )
            done: list[StreamBackupDone] = []
            for item in params.items:
                done.extend(self._item(writer, item, chunking, runtime, done))
            if not done:
                raise AppError("the policy's application items matched nothing to back up")
            runtime.report("writing manifest", urgent=True)
            writer.commit()
        except BackupCancelled:
            return CompleteRequest(outcome="cancelled", error="cancelled", warnings=runtime.warnings)
        except (AppError, ConfigError) as exc:
            return _failure(exc, runtime, "application backup failed")
        except ChunkstoreError as exc:
            return _failure(exc, runtime, "repository")
        for result in done:
            for warning in result.warnings:
                runtime.warn(f"{result.name}: {warning}")
        return CompleteRequest(
            outcome="succeeded",
            app_backup=AppBackupResult(
                restore_point_id=params.restore_point_id,
                created_at=created_at,
                streams=[_stream_result(r) for r in done],
            ),
            warnings=runtime.warnings,
        )

    def _previous_chunking(self, repo: Repository, a: JobAssignment) -> dict[str, CdcParams]:
        """The chunking of each stream of the previous point: the same parameters keep dedup."""
        assert a.app_backup is not None
        previous = a.app_backup.previous_restore_point_id
        if previous is None:
            return {}
        try:
            point = repo.read_restore_point(str(previous))
        except RestorePointNotFound:
            return {}
        out: dict[str, CdcParams] = {}
        for stream in point.streams:
            try:
                out[stream.name] = CdcParams.from_json(stream.chunker)
            except (KeyError, ValueError):
                continue
        return out

    def _item(
        self,
        writer: RestorePointWriter,
        item: ApplicationItemSpec,
        chunking: dict[str, CdcParams],
        runtime: JobRuntime,
        done: list[StreamBackupDone],
    ) -> list[StreamBackupDone]:
        before = _totals(done)

        def progress(stats: BackupStats, label: str = item.type) -> None:
            runtime.report(
                f"backing up {label}",
                bytes_read=before.bytes_read + stats.bytes_read,
                bytes_new=before.bytes_new + stats.bytes_new,
                bytes_stored=before.bytes_stored + stats.bytes_stored,
            )

        results: list[StreamBackupDone] = []
        if item.type == "files":
            label = _files_label(item.paths)
            name = files_stream_name(label)
            runtime.report(f"backing up {name}")
            results.append(
                backup_files(
                    writer,
                    item.paths,
                    label=label,
                    excludes=item.exclude,
                    params=chunking.get(name, DEFAULT_PARAMS),
                    workers=self.workers,
                    progress=progress,
                    cancel=runtime.cancel,
                )
            )
            return results
        if item.type not in ("postgresql", "mysql"):
            raise AppError(f"unknown application item type {item.type!r}")
        dump = self._database_dumper(item)
        for database in item.databases or dump.list():
            name = database_stream_name(item.type, database, item.instance)
            runtime.report(f"dumping {name}")
            results.append(
                dump.backup(
                    writer,
                    database,
                    instance=item.instance,
                    params=chunking.get(name, DEFAULT_PARAMS),
                    workers=self.workers,
                    progress=progress,
                    cancel=runtime.cancel,
                )
            )
        return results

    def _database_dumper(self, item: ApplicationItemSpec) -> _Dumper:
        """The configured server of the item's engine and instance, with that engine's functions."""
        if item.type == "postgresql":
            pg = self.config.postgres(item.instance)
            return _Dumper(
                list=lambda: list_postgres_databases(pg),
                backup=lambda *args, **kwargs: backup_postgres_database(pg, *args, **kwargs),
            )
        my = self.config.mariadb(item.instance)
        return _Dumper(
            list=lambda: list_mysql_databases(my),
            backup=lambda *args, **kwargs: backup_mysql_database(my, *args, **kwargs),
        )


@dataclass(frozen=True)
class _Dumper:
    """One database server's listing and dump, whatever the engine."""

    list: Callable[[], list[str]]
    backup: Callable[..., StreamBackupDone]


def _files_label(paths: list[str]) -> str:
    """A stable, readable label for a file set: its first path, with slashes as dashes."""
    first = paths[0].strip("/").replace("/", "-") or "root"
    return first if len(paths) == 1 else f"{first}+{len(paths) - 1}"


def _totals(done: list[StreamBackupDone]) -> BackupStats:
    total = BackupStats()
    for result in done:
        total.bytes_read += result.stats.bytes_read
        total.bytes_new += result.stats.bytes_new
        total.bytes_stored += result.stats.bytes_stored
    return total


def _stream_result(result: StreamBackupDone) -> StreamResult:
    meta = result.stream.metadata
    engine = str(meta.get("engine") or result.name.split("/", 1)[0].split("@", 1)[0])
    return StreamResult(
        name=result.name,
        engine=engine,
        instance=meta.get("instance"),
        database=meta.get("database"),
        size=result.stream.size,
        bytes_new=result.stats.bytes_new,
        bytes_stored=result.stats.bytes_stored,
        chunks=result.stats.chunks_total,
        chunks_new=result.stats.chunks_new,
        metadata={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool) or v is None},
    )


class AppRestoreRunner:
    """A database back into its server (own or new name), or a file set into a directory."""

    def __init__(
        self, config: GuestConfig, repositories: RepositoryCache | None = None, workers: int = 4
    ) -> None:
        self.config = config
        self.repositories = repositories or RepositoryCache()
        self.workers = workers

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        p = assignment.app_restore
        assert p is not None
        point = str(p.restore_point_id)

        def progress(done: int) -> None:
            runtime.report("restoring", bytes_read=done)

        try:
            repo = self.repositories.get(assignment.repository)
            if p.engine == "files":
                target = self._target_directory(p.target_directory)
                runtime.report(f"restoring files into {target}")
                files = restore_files(
                    repo,
                    point,
                    p.stream,
                    target,
                    paths=p.paths or None,
                    workers=self.workers,
                    progress=progress,
                    cancel=runtime.cancel,
                )
                for warning in files.warnings:
                    runtime.warn(warning)
                result = AppRestoreResult(
                    engine="files", target_directory=target, bytes=files.bytes_written, files=files.files
                )
            else:
                runtime.report(f"restoring {p.stream} as {p.target_database or p.database}")
                if p.engine == "postgresql":
                    db = restore_postgres_database(
                        self.config.postgres(p.instance),
                        repo,
                        point,
                        p.stream,
                        target=p.target_database,
                        overwrite=p.overwrite,
                        workers=self.workers,
                        progress=progress,
                        cancel=runtime.cancel,
                    )
                elif p.engine == "mysql":
                    db = restore_mysql_database(
                        self.config.mariadb(p.instance),
                        repo,
                        point,
                        p.stream,
                        target=p.target_database,
                        overwrite=p.overwrite,
                        workers=self.workers,
                        progress=progress,
                        cancel=runtime.cancel,
                    )
                else:
                    raise AppError(f"unknown engine {p.engine!r}")
                for warning in db.warnings:
                    runtime.warn(warning)
                result = AppRestoreResult(engine=p.engine, database=db.database, bytes=db.bytes_read)
        except (AppError, ConfigError) as exc:
            return _failure(exc, runtime, "restore failed")
        except ChunkstoreError as exc:
            return _failure(exc, runtime, "repository")
        return CompleteRequest(outcome="succeeded", app_restore=result, warnings=runtime.warnings)

    def _target_directory(self, target: str | None) -> str:
        if not target or not os.path.isabs(target):
            raise AppError("a file set is restored into an absolute target directory")
        resolved = os.path.realpath(target)
        if not any(
            resolved == root or resolved.startswith(root.rstrip("/") + "/")
            for root in self.config.allowed_roots
        ):
            raise ConfigError(
                f"{target} is outside the directories this agent may restore into "
                f"({', '.join(self.config.allowed_roots)}; see [restore] allowed_roots)"
            )
        return resolved
