"""Talking to a MariaDB/MySQL server through its own client tools (mariadb, mariadb-dump).

MariaDB's tools are preferred and MySQL's (``mysql``, ``mysqldump``) are the fallback; set the paths
explicitly for a MySQL 8 server. A password never appears on a command line: it goes into a temporary
option file (mode 0600, removed when the tool ends) given as ``--defaults-file``, so that only the
agent's settings apply and a stray ``~/.my.cnf`` cannot silently replace the configured password.
Without a password the tools read the usual option files (``/root/.my.cnf``, unix_socket auth).

The ``mariadb`` client has no query parameters, so values are written into SQL as hex literals
(``CONVERT(X'...' USING utf8mb4)``, immune to the sql_mode and to quoting), identifiers in backquotes
with backquotes doubled, and results come back as one JSON value per query.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from app.agent.apps.errors import QueryFailed
from app.agent.apps.proc import find_tool, run_tool

PACKAGE = "mariadb-client"
SYSTEM_DATABASES = frozenset({"information_schema", "performance_schema", "mysql", "sys"})
_CHARSET = re.compile(r"[A-Za-z0-9_]+")


@dataclass(frozen=True, slots=True)
class MysqlConnection:
    """How the agent reaches one MariaDB/MySQL server.

    Neither ``host`` nor ``socket``: the client's default (the local socket). ``host="localhost"``
    also means the socket to these clients; use 127.0.0.1 for TCP.
    """

    host: str | None = None
    port: int = 3306
    socket: str | None = None
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    client: str | None = None  # path of mariadb / mysql
    dump: str | None = None  # path of mariadb-dump / mysqldump
    connect_timeout_s: int = 10  # control queries and restores (mariadb-dump has no such option)

    def client_tool(self) -> str:
        return self.client or find_tool(["mariadb", "mysql"], PACKAGE)

    def dump_tool(self) -> str:
        return self.dump or find_tool(["mariadb-dump", "mysqldump"], PACKAGE)


def _option_value(value: str) -> str:
    """A value for an option file, double-quoted with the escapes the option file parser knows."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("a MySQL password cannot contain line breaks or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@functools.cache
def memory_directory() -> str | None:
    """A writable directory on a tmpfs (memory, not disk) for the password's option file: a dump
    runs for hours with it, and a file on disk could be caught by an image backup of this very
    VM or survive a crash. None when there is none (the system's temporary directory is used)."""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            tmpfs = {fields[1] for fields in (line.split() for line in mounts) if fields[2:3] == ["tmpfs"]}
    except OSError:
        return None
    # mkstemp creates the file itself (O_EXCL, mode 0600) in whichever is chosen.
    for candidate in ("/dev/shm", f"/run/user/{os.getuid()}", "/run"):  # noqa: S108
        if candidate in tmpfs and os.access(candidate, os.W_OK | os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def connection_options(conn: MysqlConnection) -> Iterator[list[str]]:
    """Options to put right after the tool's path (``--defaults-file`` must come first)."""
    path = None
    options: list[str] = []
    if conn.password is not None:
        fd, path = tempfile.mkstemp(  # created 0600
            prefix="vmr-mysql-", suffix=".cnf", dir=memory_directory()
        )
        with os.fdopen(fd, "w") as f:
            f.write(f"[client]\npassword={_option_value(conn.password)}\n")
        options.append(f"--defaults-file={path}")
    options.append(f"--user={conn.user}")
    if conn.socket:
        options += [f"--socket={conn.socket}", "--protocol=SOCKET"]
    elif conn.host:
        options += [f"--host={conn.host}", f"--port={conn.port}"]
        if conn.host != "localhost":
            options.append("--protocol=TCP")
    try:
        yield options
    finally:
        if path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def ident(name: str) -> str:
    """A quoted identifier: `name` with backquotes doubled."""
    if "\0" in name:
        raise ValueError("NUL in an identifier")
    return "`" + name.replace("`", "``") + "`"


def literal(value: str) -> str:
    """A utf8mb4 string literal that no sql_mode or quoting rule can misread."""
    return f"CONVERT(X'{value.encode().hex()}' USING utf8mb4)"


def charset_name(value: str) -> str:
    """A character set or collation name from metadata, checked before it is written into SQL."""
    if not _CHARSET.fullmatch(value):
        raise ValueError(f"unexpected character set or collation {value!r}")
    return value


def json_list(expression: str, rest: str) -> str:
    """``SELECT`` of a JSON array of ``expression`` over ``rest`` (FROM ... WHERE ...), portable to
    MariaDB 10.2+ and MySQL 5.7+ (no JSON_ARRAYAGG)."""
    items = f"GROUP_CONCAT(JSON_QUOTE({expression}) SEPARATOR ',')"
    return f"SELECT CONCAT('[', COALESCE({items}, ''), ']') {rest};\n"


class MysqlClient:
    """Control queries against one server, each a short ``mariadb`` run."""

    def __init__(self, conn: MysqlConnection, *, timeout_s: float = 300.0) -> None:
        self.conn = conn
        self._tool = conn.client_tool()
        self._timeout = timeout_s

    def execute(self, sql: str, *, database: str | None = None) -> str:
        """Run statements (stopping at the first error); return what the client printed."""
        with connection_options(self.conn) as options:
            args = [
                self._tool,
                *options,
                "--batch",
                "--raw",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
                f"--connect-timeout={self.conn.connect_timeout_s}",
            ]
            if database is not None:
                args.append(f"--database={database}")
            done = run_tool(
                args, input=sql.encode(), timeout=self._timeout, what=os.path.basename(self._tool)
            )
        return done.stdout.decode(errors="replace")

    def query_json(self, sql: str, *, database: str | None = None) -> Any:
        """Run statements whose last prints one JSON value (or nothing: None)."""
        out = self.execute("SET SESSION group_concat_max_len = 1073741824;\n" + sql, database=database)
        lines = out.strip().splitlines()
        if not lines or lines[-1] == "NULL":
            return None
        try:
            return json.loads(lines[-1])
        except ValueError:
            raise QueryFailed(f"unexpected output: {lines[-1][:200]!r}") from None

    def database_facts(self, database: str) -> dict[str, Any] | None:
        """Server version, character set and collation of ``database``; None if it does not exist."""
        where = f"WHERE SCHEMA_NAME = {literal(database)}"  # a hex literal: nothing to inject
        facts = self.query_json(
            "SELECT JSON_OBJECT('version', @@version, 'charset', DEFAULT_CHARACTER_SET_NAME,"  # noqa: S608
            f" 'collation', DEFAULT_COLLATION_NAME) FROM information_schema.SCHEMATA {where};\n"
        )
        return facts if isinstance(facts, dict) else None

    def database_exists(self, database: str) -> bool:
        return self.database_facts(database) is not None

    def names(self, column: str, table: str, schema_column: str, database: str, extra: str = "") -> list[str]:
        """``column`` of information_schema.``table`` for one schema (tables, triggers, routines...)."""
        found = self.query_json(
            json_list(
                column,
                f"FROM information_schema.{table} WHERE {schema_column} = {literal(database)} {extra}",
            )
        )
        return sorted(str(n) for n in found or ())
