"""MariaDB/MySQL: restore a dump stream into the server it came from, under its own name or a new one.

MariaDB has no ``RENAME DATABASE``. The choices were: restore twice (once into a staging database to
prove the dump good, then again into the target: twice the time, and the target is half-written
while the second pass runs), or restore once into staging and move the result into place. This does
the latter, keeping the old tables until the new ones are in:

1. ``CREATE DATABASE vmr_restore_<random>`` with the recorded character set and collation, and the
   dump fed into it by the ``mariadb`` client (which stops at the first error), from the repository
   with every chunk and the whole stream verified; any failure drops it and leaves the target as it was;
2. the staging database's views, triggers, routines and events are dumped (definitions only) by
   ``mariadb-dump`` itself, so definers, sql_modes and character sets stay exactly right;
3. triggers are dropped (a table with triggers cannot change schema), then ONE ``RENAME TABLE``
   statement moves the target's tables (if any) to ``vmr_old_<random>`` and the restored tables into
   the target. It is all-or-nothing and waits at most ``lock_wait_timeout_s`` for the applications'
   locks; if it fails, the target's triggers are put back and nothing else changed;
4. the target's old views, routines and events are dropped and the restored ones created from step 2;
5. the staging and old databases are dropped.

Between 3 and 4 the target briefly has its new tables without their triggers and views. Database
privileges (``GRANT ... ON db.*``) are kept by name, so the target keeps the grants it had. A routine
created under a different database collation than the database's current one makes the dump itself
say ``ALTER DATABASE <original name>``: mariadb-dump's behaviour, left as it is. Events run in the
staging database as soon as the dump creates them, as they would in a plain restore.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable

from app.agent.apps.errors import QueryFailed, RestoreFailed, TargetExists, query_failures_as
from app.agent.apps.mysql_backup import ENGINE, FORMAT, dump_options
from app.agent.apps.mysql_client import (
    MysqlClient,
    MysqlConnection,
    charset_name,
    connection_options,
    ident,
)
from app.agent.apps.pipes import feed_restore
from app.agent.apps.proc import iter_lines_bounded, run_tool, tool_version
from app.agent.apps.results import DatabaseRestoreResult
from app.chunkstore.errors import ChunkstoreError
from app.chunkstore.manifest import RestorePoint
from app.chunkstore.repository import Repository
from app.chunkstore.streamread import DEFAULT_WORKERS, iter_stream, stream_record

STAGING_PREFIX = "vmr_restore_"
OLD_PREFIX = "vmr_old_"


@query_failures_as(RestoreFailed)
def restore_mysql_database(
    conn: MysqlConnection,
    repo: Repository,
    point: RestorePoint | str,
    stream: str,
    *,
    target: str | None = None,
    overwrite: bool = False,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    lock_wait_timeout_s: int = 60,
) -> DatabaseRestoreResult:
    """Restore stream ``stream`` of ``point`` as database ``target`` (default: its original name).

    An existing database of the original name is replaced; one of another name only with
    ``overwrite=True``, else ``TargetExists``. Raises ``RestoreFailed`` saying what state the target
    is in (unchanged, unless the message says otherwise).
    """
    if isinstance(point, str):
        point = repo.read_restore_point(point)
    record = stream_record(repo, point, stream)
    meta = record.metadata
    if meta.get("engine") != ENGINE or meta.get("format") != FORMAT:
        raise RestoreFailed(f"stream {stream!r} is not a MariaDB/MySQL SQL dump")
    source = str(meta["database"])
    target = target or source
    charset = charset_name(str(meta["charset"]))
    collation = charset_name(str(meta["collation"]))
    client = MysqlClient(conn)
    replace = client.database_exists(target)
    if replace and target != source and not overwrite:
        raise TargetExists(f"database '{target}' exists: choose another name or ask to overwrite it")
    unchanged = f"database '{target}' was not changed" if replace else f"database '{target}' was not created"
    staging = STAGING_PREFIX + secrets.token_hex(6)
    try:
        client.execute(f"CREATE DATABASE {ident(staging)} CHARACTER SET {charset} COLLATE {collation};\n")
    except QueryFailed as exc:
        raise RestoreFailed(f"cannot create the staging database: {exc}; {unchanged}") from None
    try:
        with connection_options(conn) as options:
            args = [conn.client_tool(), *options, *_SCRIPT_OPTIONS, f"--database={staging}"]
            chunks = iter_stream(repo, point, stream, workers=workers)
            try:
                stderr = feed_restore(args, chunks, cancel=cancel, progress=progress)
            except RestoreFailed as exc:
                raise RestoreFailed(f"{exc}; {unchanged}", stderr=exc.stderr) from None
            except ChunkstoreError as exc:
                raise RestoreFailed(f"the backup stream cannot be read back: {exc}; {unchanged}") from exc
        may_replace = replace or overwrite
        replaced, warnings = _put_in_place(
            conn, client, staging, target, charset, collation, may_replace, lock_wait_timeout_s
        )
    except BaseException:
        _drop_quietly(client, staging)
        raise
    return DatabaseRestoreResult(
        database=target,
        replaced=replaced,
        bytes_read=record.size,
        warnings=(*iter_lines_bounded(stderr), *warnings),
    )


#: How SQL scripts (the dump, object definitions) are fed to the client: stop at the first error,
#: bytes as they are (no \r\n translation, NUL allowed).
_SCRIPT_OPTIONS = ("--batch", "--binary-mode", "--default-character-set=utf8mb4")


def _put_in_place(
    conn: MysqlConnection,
    client: MysqlClient,
    staging: str,
    target: str,
    charset: str,
    collation: str,
    may_replace: bool,
    lock_wait_timeout_s: int,
) -> tuple[bool, list[str]]:
    """Steps 2-5 of the module's description; returns (an existing database was replaced, warnings)."""
    objects = _definitions(conn, client, staging)
    tables = _tables(client, staging)
    exists = client.database_exists(target)
    if exists and not may_replace:
        raise TargetExists(f"database '{target}' was created meanwhile; it was not changed")
    unchanged = f"database '{target}' was not changed" if exists else f"database '{target}' was not created"
    old = OLD_PREFIX + secrets.token_hex(6)
    wait = f"SET SESSION lock_wait_timeout = {int(lock_wait_timeout_s)};\n"
    old_tables = _tables(client, target) if exists else []
    old_trigger_names = _trigger_names(client, target) if exists else []
    old_triggers = b""
    if old_trigger_names:  # kept to put them back if the swap fails after some were dropped
        old_triggers = _dump(
            conn, ["--no-data", "--no-create-info", "--triggers", "--add-drop-trigger", "--", target]
        )
    if exists:
        setup = f"CREATE DATABASE {ident(old)};\n"
    else:
        setup = f"CREATE DATABASE {ident(target)} CHARACTER SET {charset} COLLATE {collation};\n"
    moves = [f"{ident(target)}.{ident(t)} TO {ident(old)}.{ident(t)}" for t in old_tables]
    moves += [f"{ident(staging)}.{ident(t)} TO {ident(target)}.{ident(t)}" for t in tables]
    # One session, every lock wait bounded: the target's trigger drops and the move are the only
    # statements that wait for the applications, and they run back to back.
    swap = wait + _drop_triggers_sql(target, old_trigger_names)
    if moves:
        swap += f"RENAME TABLE {', '.join(moves)};\n"
    created = False  # what this run created, the only thing its undo may drop
    try:
        client.execute(_drop_triggers_sql(staging, _trigger_names(client, staging)))
        client.execute(setup)
        created = True
        client.execute(swap)
    except QueryFailed as exc:
        problem = (
            _undo(conn, client, target, old, exists, old_trigger_names, old_triggers, wait)
            if created
            else ""  # the target (or helper) was created meanwhile by someone else: not ours to drop
        )
        raise RestoreFailed(
            f"cannot move the restored tables into place: {exc}; {unchanged}{problem}"
        ) from None
    warnings: list[str] = []
    try:
        if exists:
            client.execute(
                wait
                + _drop_objects_sql(client, target)
                + f"ALTER DATABASE {ident(target)} CHARACTER SET {charset} COLLATE {collation};\n"
            )
        _run_script(conn, target, objects)
    except QueryFailed as exc:
        kept = f"; the previous tables are kept in database '{old}'" if exists else ""
        raise RestoreFailed(
            f"the restored tables are in '{target}', but its views, triggers, routines or events could not"
            f" all be created: {exc}{kept}"
        ) from None
    for leftover in (staging, old) if exists else (staging,):
        try:
            client.execute(f"DROP DATABASE IF EXISTS {ident(leftover)};\n")
        except QueryFailed as exc:
            warnings.append(f"could not drop the temporary database '{leftover}': {exc}")
    return exists, warnings


def _tables(client: MysqlClient, database: str) -> list[str]:
    """Everything ``RENAME TABLE`` can move: base tables and sequences, not views."""
    return client.names("TABLE_NAME", "TABLES", "TABLE_SCHEMA", database, "AND TABLE_TYPE <> 'VIEW'")


def _dump(conn: MysqlConnection, arguments: list[str]) -> bytes:
    dump = conn.dump_tool()
    with connection_options(conn) as options:
        args = [
            dump,
            *options,
            *dump_options(tool_version(dump)),
            "--skip-comments",
            "--skip-lock-tables",
            *arguments,
        ]
        return run_tool(args, what=dump.rsplit("/", 1)[-1]).stdout


def _definitions(conn: MysqlConnection, client: MysqlClient, database: str) -> bytes:
    """Views, triggers, routines and events of ``database`` as SQL, by mariadb-dump (no data)."""
    code = _dump(
        conn, ["--no-data", "--no-create-info", "--triggers", "--routines", "--events", "--", database]
    )
    views = client.names("TABLE_NAME", "TABLES", "TABLE_SCHEMA", database, "AND TABLE_TYPE = 'VIEW'")
    if views:  # after the routines: a view may call a stored function
        code += _dump(conn, ["--no-data", "--skip-triggers", "--", database, *views])
    return code


def _trigger_names(client: MysqlClient, database: str) -> list[str]:
    return client.names("TRIGGER_NAME", "TRIGGERS", "TRIGGER_SCHEMA", database)


def _drop_triggers_sql(database: str, names: list[str]) -> str:
    return "".join(f"DROP TRIGGER {ident(database)}.{ident(n)};\n" for n in names)


def _drop_objects_sql(client: MysqlClient, database: str) -> str:
    """Drop the views, routines and events of ``database`` (its tables were moved out)."""
    db = ident(database)
    views = client.names("TABLE_NAME", "TABLES", "TABLE_SCHEMA", database, "AND TABLE_TYPE = 'VIEW'")
    sql = "".join(f"DROP VIEW IF EXISTS {db}.{ident(v)};\n" for v in views)
    for kind in ("FUNCTION", "PROCEDURE"):
        names = client.names(
            "ROUTINE_NAME", "ROUTINES", "ROUTINE_SCHEMA", database, f"AND ROUTINE_TYPE = '{kind}'"
        )
        sql += "".join(f"DROP {kind} IF EXISTS {db}.{ident(n)};\n" for n in names)
    events = client.names("EVENT_NAME", "EVENTS", "EVENT_SCHEMA", database)
    return sql + "".join(f"DROP EVENT IF EXISTS {db}.{ident(e)};\n" for e in events)


def _run_script(conn: MysqlConnection, database: str, script: bytes, *, force: bool = False) -> None:
    tool = conn.client_tool()
    with connection_options(conn) as options:
        args = [tool, *options, *_SCRIPT_OPTIONS, f"--database={database}"]
        if force:
            args.append("--force")
        run_tool(args, input=script, what=tool.rsplit("/", 1)[-1])


def _undo(
    conn: MysqlConnection,
    client: MysqlClient,
    target: str,
    old: str,
    existed: bool,
    trigger_names: list[str],
    triggers: bytes,
    wait: str,
) -> str:
    """After a failed swap (nothing moved: RENAME TABLE is all or nothing): put back the target's
    triggers that were dropped, remove the helper database. Returns what could not be undone."""
    problems = []
    try:
        if existed:
            if set(trigger_names) - set(_trigger_names(client, target)):
                with contextlib.suppress(QueryFailed):  # judged by what exists afterwards
                    _run_script(conn, target, wait.encode() + triggers, force=True)
                missing = sorted(set(trigger_names) - set(_trigger_names(client, target)))
                if missing:
                    problems.append(f"triggers {missing} of '{target}' could not be put back")
            client.execute(f"DROP DATABASE IF EXISTS {ident(old)};\n")
        else:
            client.execute(f"DROP DATABASE IF EXISTS {ident(target)};\n")
    except QueryFailed as exc:
        problems.append(f"cleaning up failed: {exc}")
    return "".join(f" ({p})" for p in problems)


def _drop_quietly(client: MysqlClient, name: str) -> None:
    with contextlib.suppress(QueryFailed):  # the original error is the one to report
        client.execute(f"DROP DATABASE IF EXISTS {ident(name)};\n")
