"""MariaDB/MySQL: list a server's databases; back one up as a ``mariadb-dump`` SQL stream.

``--single-transaction`` gives one consistent InnoDB snapshot without locking writers;
``--routines --triggers --events`` take the code along with the data; ``--hex-blob`` keeps binary
columns intact whatever the connection's character set. The database name is given without
``--databases``, so the dump has no ``CREATE DATABASE``/``USE`` and restores under any name.
``--skip-dump-date`` keeps the last line identical from dump to dump (it deduplicates), and that line
("-- Dump completed") doubles as the completeness check: a dump cut short never has it.
"""

from __future__ import annotations

import threading

from app.agent.apps.errors import DumpFailed, query_failures_as
from app.agent.apps.mysql_client import (
    SYSTEM_DATABASES,
    MysqlClient,
    MysqlConnection,
    connection_options,
    json_list,
)
from app.agent.apps.pipes import pump_dump
from app.agent.apps.proc import iter_lines_bounded, tool_version
from app.agent.apps.results import DEFAULT_INSTANCE, AppBackupResult, database_stream_name
from app.chunkstore.backup import ProgressCallback
from app.chunkstore.cdc import DEFAULT_PARAMS, CdcParams
from app.chunkstore.repository import RestorePointWriter
from app.chunkstore.streams import DEFAULT_WORKERS, open_stream_backup

ENGINE = "mysql"
FORMAT = "sql"
COMPLETED = b"-- Dump completed"
TRANSIENT_PREFIXES = ("vmr_restore_", "vmr_old_")


def list_mysql_databases(conn: MysqlConnection) -> list[str]:
    """User databases (not the server's own schemas, not a restore's temporary ones)."""
    client = MysqlClient(conn)
    names = client.query_json(json_list("SCHEMA_NAME", "FROM information_schema.SCHEMATA"))
    return sorted(
        str(n) for n in names or () if n not in SYSTEM_DATABASES and not str(n).startswith(TRANSIENT_PREFIXES)
    )


def dump_options(tool_version_text: str) -> list[str]:
    """The dump options shared by backups and the restore's object copy."""
    options = ["--default-character-set=utf8mb4", "--skip-dump-date", "--no-tablespaces"]
    if "MariaDB" not in tool_version_text:
        options.append("--set-gtid-purged=OFF")  # MySQL's mysqldump: no GTID state in a per-database dump
    return options


@query_failures_as(DumpFailed)
def backup_mysql_database(
    conn: MysqlConnection,
    writer: RestorePointWriter,
    database: str,
    *,
    instance: str = DEFAULT_INSTANCE,
    stream_name: str | None = None,
    params: CdcParams = DEFAULT_PARAMS,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> AppBackupResult:
    """Dump ``database`` into the restore point being written, as stream ``mysql/<database>``.

    Raises ``DumpFailed`` (the tool's own words, or "incomplete" when the completion line is missing)
    or ``ToolMissing``; the stream is then released and the restore point can commit without it.
    """
    client = MysqlClient(conn)
    facts = client.database_facts(database)
    if facts is None:
        raise DumpFailed(f"mariadb-dump failed: unknown database '{database}'")
    dump = conn.dump_tool()
    version = tool_version(dump)
    metadata = {
        "engine": ENGINE,
        "instance": instance,
        "database": database,
        "format": FORMAT,
        "flavor": "mariadb" if "MariaDB" in str(facts["version"]) else "mysql",
        "server_version": facts["version"],
        "charset": facts["charset"],
        "collation": facts["collation"],
        "tool": dump.rsplit("/", 1)[-1],
        "tool_version": version,
    }
    name = stream_name or database_stream_name(ENGINE, database, instance)
    # --single-transaction gives one snapshot of transactional tables only: MyISAM, Aria or MEMORY
    # tables would each be read at another moment. With any of them the database's tables are
    # locked for reading for the dump instead (writes wait), so the dump stays one point in time.
    unsnapshotted = client.names(
        "TABLE_NAME",
        "TABLES",
        "TABLE_SCHEMA",
        database,
        "AND ENGINE IN (SELECT ENGINE FROM information_schema.ENGINES WHERE TRANSACTIONS = 'NO')",
    )
    consistency = "--lock-tables" if unsnapshotted else "--single-transaction"
    notes: tuple[str, ...] = ()
    if unsnapshotted:
        shown = ", ".join(unsnapshotted[:5]) + (" ..." if len(unsnapshotted) > 5 else "")
        notes = (
            f"non-transactional tables ({shown}): the database's tables were locked for reading during "
            "the dump, so writes to them waited",
        )
    with connection_options(conn) as options:
        args = [
            dump,
            *options,
            *dump_options(version),
            consistency,
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-create-db",
            "--",
            database,
        ]
        with open_stream_backup(
            writer, name, metadata=metadata, params=params, workers=workers, progress=progress, cancel=cancel
        ) as backup:
            pumped = pump_dump(args, backup, cancel=cancel)
            if COMPLETED not in pumped.tail:
                raise DumpFailed(
                    f"{metadata['tool']} exited normally but its output is incomplete (no completion line)",
                    stderr=pumped.stderr,
                )
            done = backup.finish()
    return AppBackupResult(done.record, done.stats, notes + tuple(iter_lines_bounded(pumped.stderr)))
