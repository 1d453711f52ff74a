"""Application-aware backups for the guest agent: database dumps, file sets, quiescing.

Everything here is blocking (the agent runs it in worker threads) and drives the applications' own
tools as subprocesses; data flows from the tool's pipe into the repository (``app.chunkstore``
streams) and back, never through the control plane.

    writer = repo.begin_restore_point(rp_id, vm_config={}, metadata={...})
    backup_postgres_database(pg, writer, "sales")          # stream "postgresql/sales"
    backup_mysql_database(my, writer, "shop")              # stream "mysql/shop"
    backup_files(writer, ["/etc", "/srv/www"], label="config")   # stream "files/config"
    writer.commit()

    restore_postgres_database(pg, repo, rp_id, "postgresql/sales", target="sales_copy")
    restore_files(repo, rp_id, "files/config", "/tmp/restore", paths=["etc/nginx"])

    with Quiesce([HookScripts(pre, post), PostgresCheckpoint(pg), MysqlReadLock(my)]):
        take_the_vm_snapshot()
"""

from app.agent.apps.errors import (
    AppError,
    DumpFailed,
    QueryFailed,
    QuiesceError,
    RestoreFailed,
    TargetExists,
    ToolMissing,
)
from app.agent.apps.files_backup import backup_files
from app.agent.apps.files_restore import ExternalSymlinks, restore_files
from app.agent.apps.mysql_backup import backup_mysql_database, list_mysql_databases
from app.agent.apps.mysql_client import MysqlConnection
from app.agent.apps.mysql_restore import restore_mysql_database
from app.agent.apps.postgres_backup import backup_postgres_database, list_postgres_databases
from app.agent.apps.postgres_client import PostgresConnection
from app.agent.apps.postgres_restore import restore_postgres_database
from app.agent.apps.quiesce import HookScripts, MysqlReadLock, PostgresCheckpoint, Quiesce, Quiescer
from app.agent.apps.results import (
    AppBackupResult,
    DatabaseRestoreResult,
    FilesRestoreResult,
    database_stream_name,
    files_stream_name,
)

__all__ = [
    "AppBackupResult",
    "AppError",
    "DatabaseRestoreResult",
    "DumpFailed",
    "ExternalSymlinks",
    "FilesRestoreResult",
    "HookScripts",
    "MysqlConnection",
    "MysqlReadLock",
    "PostgresCheckpoint",
    "PostgresConnection",
    "QueryFailed",
    "Quiesce",
    "QuiesceError",
    "Quiescer",
    "RestoreFailed",
    "TargetExists",
    "ToolMissing",
    "backup_files",
    "backup_mysql_database",
    "backup_postgres_database",
    "database_stream_name",
    "files_stream_name",
    "list_mysql_databases",
    "list_postgres_databases",
    "restore_files",
    "restore_mysql_database",
    "restore_postgres_database",
]
