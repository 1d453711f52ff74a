"""PostgreSQL: list a server's databases; back one up as a ``pg_dump`` custom-format stream.

``--format=custom`` keeps pg_restore's abilities (``--exit-on-error``, selective restores) and
``--compress=0`` leaves compression to the repository: a compressed dump changes all over after a
one-row edit and would never deduplicate, an uncompressed one changes only around the edit, which
content-defined chunking finds again. The dump runs in pg_dump's own snapshot (one consistent
point in time, no locks beyond ACCESS SHARE); ``--lock-wait-timeout`` keeps a backup from waiting
forever behind a pending ``ALTER TABLE``.
"""

from __future__ import annotations

import threading

from app.agent.apps.errors import DumpFailed, query_failures_as
from app.agent.apps.pipes import pump_dump
from app.agent.apps.postgres_client import PostgresConnection, Psql, check_dump_tool, conninfo
from app.agent.apps.postgres_props import FACTS_SQL, DatabaseProperties
from app.agent.apps.proc import iter_lines_bounded
from app.agent.apps.results import DEFAULT_INSTANCE, AppBackupResult, database_stream_name
from app.chunkstore.backup import ProgressCallback
from app.chunkstore.cdc import DEFAULT_PARAMS, CdcParams
from app.chunkstore.repository import RestorePointWriter
from app.chunkstore.streams import DEFAULT_WORKERS, open_stream_backup

ENGINE = "postgresql"
FORMAT = "pg_dump-custom"
#: Databases the restore code creates for a moment; never worth backing up.
TRANSIENT_PREFIXES = ("vmr_restore_", "vmr_old_")


def list_postgres_databases(conn: PostgresConnection) -> list[str]:
    """Databases a backup of "all databases" covers: not templates, accepting connections."""
    names = Psql(conn).query_json(
        "SELECT coalesce(json_agg(datname ORDER BY datname), '[]'::json) FROM pg_database"
        " WHERE NOT datistemplate AND datallowconn;"
    )
    return [str(n) for n in names if not str(n).startswith(TRANSIENT_PREFIXES)]


@query_failures_as(DumpFailed)
def backup_postgres_database(
    conn: PostgresConnection,
    writer: RestorePointWriter,
    database: str,
    *,
    instance: str = DEFAULT_INSTANCE,
    stream_name: str | None = None,
    params: CdcParams = DEFAULT_PARAMS,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    lock_wait_timeout_s: int = 600,
) -> AppBackupResult:
    """Dump ``database`` into the restore point being written, as stream ``postgresql/<database>``.

    Pass the ``params`` of this stream's previous backup (``StreamRecord.chunker``) or dedup against
    it is lost. Raises ``DumpFailed`` (pg_dump's own words) or ``ToolMissing``; the stream is then
    released and the restore point can still be committed without it.
    """
    psql = Psql(conn)
    facts = psql.query_json(FACTS_SQL, db=database)
    if facts is None:
        raise DumpFailed(f'pg_dump failed: database "{database}" does not exist')
    props = DatabaseProperties.from_facts(facts)
    tool_version = check_dump_tool(conn, "pg_dump", int(facts["server_version_num"]))
    metadata = {
        "engine": ENGINE,
        "instance": instance,
        "database": database,
        "format": FORMAT,
        "compression": "none",
        "server_version": facts["server_version"],
        "server_version_num": facts["server_version_num"],
        "tool": "pg_dump",
        "tool_version": tool_version,
        "properties": props.to_metadata(),
    }
    args = [
        conn.tool("pg_dump"),
        "--format=custom",
        "--compress=0",
        "--no-password",
        f"--lock-wait-timeout={lock_wait_timeout_s}s",
        f"--dbname={conninfo(database)}",
    ]
    name = stream_name or database_stream_name(ENGINE, database, instance)
    with open_stream_backup(
        writer, name, metadata=metadata, params=params, workers=workers, progress=progress, cancel=cancel
    ) as backup:
        pumped = pump_dump(args, backup, env=conn.env(), cancel=cancel)
        if not pumped.head.startswith(b"PGDMP"):
            raise DumpFailed(
                "pg_dump exited normally but wrote no custom-format archive", stderr=pumped.stderr
            )
        done = backup.finish()
    return AppBackupResult(done.record, done.stats, tuple(iter_lines_bounded(pumped.stderr)))
