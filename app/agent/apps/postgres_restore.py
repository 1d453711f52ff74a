"""PostgreSQL: restore a dump stream into the server it came from, under its own name or a new one.

Nothing existing is touched until the restored copy is known good:

1. ``CREATE DATABASE vmr_restore_<random>`` with the recorded encoding, locale and owner;
2. ``pg_restore --exit-on-error`` into it, fed from the repository (every chunk verified, and the
   whole stream checked at its end; a failure kills pg_restore and drops the temporary database);
3. the recorded database settings and GRANTs applied to it;
4. into place: a new name is a rename. Replacing a database (its own name, or ``overwrite``) stops
   new connections to the old one, ends its sessions, then swaps the names in one transaction
   (``ALTER DATABASE ... RENAME`` is transactional, unlike ``DROP``), and only then drops the old
   copy. A failure before the swap re-opens the old database as it was.

Ownership: by default objects keep their recorded owners and privileges (``keep_owners=True``), which
is what a restore into the same server wants: the application's roles still own their tables and can
use them. Roles are server-wide and not part of a database dump, so restoring onto a server that lacks
them fails with pg_restore's "role ... does not exist"; ``keep_owners=False`` then restores every
object owned by the connecting user without GRANTs (``--no-owner --no-privileges``).
Tablespaces are used as dumped (they exist on the same server); the connection limit is not restored.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable

from app.agent.apps.errors import QueryFailed, RestoreFailed, TargetExists, ToolMissing, query_failures_as
from app.agent.apps.pipes import feed_restore
from app.agent.apps.postgres_backup import ENGINE, FORMAT
from app.agent.apps.postgres_client import PostgresConnection, Psql, conninfo, major_of
from app.agent.apps.postgres_props import DatabaseProperties, apply_properties_sql, create_database_sql
from app.agent.apps.proc import iter_lines_bounded, tool_version
from app.agent.apps.results import DatabaseRestoreResult
from app.chunkstore.errors import ChunkstoreError
from app.chunkstore.manifest import RestorePoint
from app.chunkstore.repository import Repository
from app.chunkstore.streamread import DEFAULT_WORKERS, iter_stream, stream_record

STAGING_PREFIX = "vmr_restore_"
OLD_PREFIX = "vmr_old_"


@query_failures_as(RestoreFailed)
def restore_postgres_database(
    conn: PostgresConnection,
    repo: Repository,
    point: RestorePoint | str,
    stream: str,
    *,
    target: str | None = None,
    overwrite: bool = False,
    keep_owners: bool = True,
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
    disconnect_timeout_s: float = 30.0,
) -> DatabaseRestoreResult:
    """Restore stream ``stream`` of ``point`` as database ``target`` (default: its original name).

    An existing database of the original name is replaced (that is what restoring it means); an
    existing database of another name only with ``overwrite=True``, else ``TargetExists``. Raises
    ``RestoreFailed`` saying what state the target is in (unchanged, unless the message says so).
    """
    if isinstance(point, str):
        point = repo.read_restore_point(point)
    record = stream_record(repo, point, stream)
    meta = record.metadata
    if meta.get("engine") != ENGINE or meta.get("format") != FORMAT:
        raise RestoreFailed(f"stream {stream!r} is not a PostgreSQL custom-format dump")
    source = str(meta["database"])
    target = target or source
    props = DatabaseProperties.from_metadata(meta["properties"])
    if target == conn.maintenance_db:  # a database cannot be renamed by a session connected to it
        conn = dataclasses.replace(conn, maintenance_db="template1")
    psql = Psql(conn)
    pg_restore = conn.tool("pg_restore")
    _check_reader(pg_restore, str(meta.get("tool_version", "")))
    replace = psql.database_exists(target)
    if replace and target != source and not overwrite:
        raise TargetExists(f'database "{target}" exists: choose another name or ask to overwrite it')

    warnings: list[str] = []
    owner = None
    if keep_owners and props.owner:
        if psql.role_exists(props.owner):
            owner = props.owner
        else:
            warnings.append(f'role "{props.owner}" does not exist: the database is owned by "{conn.user}"')
    staging = STAGING_PREFIX + secrets.token_hex(6)
    sql, variables = create_database_sql(props, owner=owner)
    try:
        psql.execute(sql, db=staging, **variables)
    except QueryFailed as exc:
        raise RestoreFailed(
            f'cannot create the temporary database: {exc}; "{target}" was not changed'
        ) from None
    unchanged = f'database "{target}" was not changed' if replace else f'database "{target}" was not created'
    try:
        args = [pg_restore, "--exit-on-error", "--no-password", f"--dbname={conninfo(staging)}"]
        if not keep_owners:
            args += ["--no-owner", "--no-privileges"]
        chunks = iter_stream(repo, point, stream, workers=workers)
        try:
            stderr = feed_restore(args, chunks, env=conn.env(), cancel=cancel, progress=progress)
        except RestoreFailed as exc:
            hint = ""
            if "role" in exc.stderr and "does not exist" in exc.stderr:
                hint = " (restore without keeping owners to give every object to the connecting user)"
            raise RestoreFailed(f"{exc}{hint}; {unchanged}", stderr=exc.stderr) from None
        except ChunkstoreError as exc:
            raise RestoreFailed(f"the backup stream cannot be read back: {exc}; {unchanged}") from exc
        warnings += iter_lines_bounded(stderr)
        sql, variables = apply_properties_sql(props, grants=keep_owners)
        if sql:
            try:
                psql.execute(sql, db=staging, **variables)
            except QueryFailed as exc:
                raise RestoreFailed(f"cannot apply the database settings: {exc}; {unchanged}") from None
        if psql.database_exists(target):
            if not replace and not overwrite:
                raise TargetExists(f'database "{target}" was created meanwhile; it was not changed')
            warnings += _replace(psql, staging, target, disconnect_timeout_s)
            replace = True
        else:
            try:
                psql.execute('ALTER DATABASE :"tmp" RENAME TO :"db";', tmp=staging, db=target)
            except QueryFailed as exc:
                raise RestoreFailed(f"cannot rename the restored database: {exc}; {unchanged}") from None
    except BaseException:
        _drop_quietly(psql, staging)
        raise
    return DatabaseRestoreResult(
        database=target, replaced=replace, bytes_read=record.size, warnings=tuple(warnings)
    )


def _check_reader(pg_restore: str, dumped_by: str) -> None:
    """pg_restore reads archives of its own and older pg_dump versions only."""
    have = major_of(tool_version(pg_restore))
    if dumped_by and have < major_of(dumped_by):
        need = major_of(dumped_by)
        raise ToolMissing(
            f"pg_restore {have} cannot read a dump made by pg_dump {need}: install postgresql-client-{need}"
        )


def _replace(psql: Psql, staging: str, target: str, timeout_s: float) -> list[str]:
    """Swap ``staging`` in for ``target``; the old copy is dropped only after the swap committed."""
    old = OLD_PREFIX + secrets.token_hex(6)
    unchanged = f'database "{target}" was not changed'
    allowed = psql.query_json(
        "SELECT to_json(datallowconn) FROM pg_database WHERE datname = :'db';", db=target
    )
    try:
        psql.execute('ALTER DATABASE :"db" ALLOW_CONNECTIONS false;', db=target)
    except QueryFailed as exc:
        raise RestoreFailed(f'cannot close "{target}" to new connections: {exc}; {unchanged}') from None
    try:
        deadline = time.monotonic() + timeout_s
        while psql.disconnect_all(target):
            if time.monotonic() > deadline:
                raise RestoreFailed(
                    f'sessions on "{target}" did not end within {timeout_s:.0f} s; {unchanged}'
                )
            time.sleep(0.2)
        psql.execute(  # renames are transactional: both or neither
            'BEGIN;\nALTER DATABASE :"db" RENAME TO :"old";\n'
            'ALTER DATABASE :"tmp" RENAME TO :"db";\nCOMMIT;\n',
            db=target,
            old=old,
            tmp=staging,
        )
    except BaseException as exc:
        try:
            if allowed is not False:
                psql.execute('ALTER DATABASE :"db" ALLOW_CONNECTIONS true;', db=target)
        except QueryFailed:
            pass
        if isinstance(exc, QueryFailed):
            raise RestoreFailed(f"cannot swap in the restored database: {exc}; {unchanged}") from None
        raise
    try:
        psql.execute('DROP DATABASE :"old";', old=old)
    except QueryFailed as exc:
        return [f'the previous "{target}" was kept as "{old}" (drop it when no longer needed): {exc}']
    return []


def _drop_quietly(psql: Psql, name: str) -> None:
    """Drop a temporary database after a failure; its sessions (a killed pg_restore's) first."""
    try:
        deadline = time.monotonic() + 30
        while psql.disconnect_all(name) and time.monotonic() < deadline:
            time.sleep(0.2)
        psql.execute('DROP DATABASE IF EXISTS :"db";', db=name)
    except QueryFailed:
        pass  # the original error is the one to report; the name says what it is
