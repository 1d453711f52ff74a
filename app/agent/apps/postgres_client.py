"""Talking to a PostgreSQL server through its own client tools (psql, pg_dump, pg_restore).

The agent is synchronous and must not import a server-side database stack, so control queries run
through ``psql``: SQL on stdin, values passed as psql variables (``-v db=...``, used as ``:'db'`` and
``:"db"``) so psql itself quotes every literal and identifier, and results come back as one JSON value.
Connection settings travel in the environment (PGHOST, PGPORT, PGUSER, PGPASSWORD): never on a command
line, where ``ps`` would show a password. Database names go in a conninfo string (``dbname='...'``),
because a bare ``-d`` value containing ``=`` would itself be parsed as a conninfo.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.agent.apps.errors import QueryFailed, ToolMissing
from app.agent.apps.proc import find_tool, run_tool, tool_version

PACKAGE = "postgresql-client"
APPLICATION_NAME = "vmrecovery-agent"


@dataclass(frozen=True, slots=True)
class PostgresConnection:
    """How the agent reaches one PostgreSQL server (from the agent's own configuration file).

    ``host=None`` uses the client's default (the local Unix socket). ``bindir`` picks a tool version
    explicitly (``/usr/lib/postgresql/16/bin``): pg_dump must be at least the server's major version.
    """

    host: str | None = None
    port: int = 5432
    user: str = "postgres"
    password: str | None = field(default=None, repr=False)
    maintenance_db: str = "postgres"
    sslmode: str | None = None
    bindir: str | None = None
    connect_timeout_s: int = 10

    def env(self) -> dict[str, str]:
        """The tools' environment: ours over the agent's (PGSSLROOTCERT and friends still apply)."""
        env = dict(os.environ)
        for key in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSERVICE"):
            env.pop(key, None)
        if self.host:
            env["PGHOST"] = self.host
        env["PGPORT"] = str(self.port)
        env["PGUSER"] = self.user
        env["PGAPPNAME"] = APPLICATION_NAME
        env["PGCONNECT_TIMEOUT"] = str(self.connect_timeout_s)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        if self.sslmode:
            env["PGSSLMODE"] = self.sslmode
        return env

    def tool(self, name: str) -> str:
        return find_tool([name], PACKAGE, self.bindir)


def conninfo(database: str) -> str:
    """A conninfo naming only the database: ``dbname='it''s'`` style quoting, libpq's rules."""
    escaped = database.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def major_of(version_text: str) -> int:
    """Major version from "pg_dump (PostgreSQL) 15.20 (Debian ...)" or "16devel"."""
    match = re.search(r"(\d+)(?:\.(\d+))?", version_text.split(")", 1)[-1])
    if match is None:
        raise ToolMissing(f"cannot tell the version of {version_text!r}")
    major = int(match.group(1))
    if major < 10 and match.group(2) is not None:  # 9.6 and earlier: two-part majors
        return major * 100 + int(match.group(2))
    return major


def server_major(version_num: int) -> int:
    """Major version from ``server_version_num`` (150020 -> 15, 90624 -> 906)."""
    return version_num // 10000 if version_num >= 100000 else version_num // 100


class Psql:
    """Control queries against one server, each a short ``psql`` run."""

    def __init__(self, conn: PostgresConnection, *, timeout_s: float = 300.0) -> None:
        self.conn = conn
        self._psql = conn.tool("psql")
        self._timeout = timeout_s

    def _args(self, database: str | None, variables: Mapping[str, str]) -> list[str]:
        args = [
            self._psql,
            "--no-psqlrc",
            "--no-password",
            "--quiet",
            "--no-align",
            "--tuples-only",
            "--set=ON_ERROR_STOP=1",
            f"--dbname={conninfo(database or self.conn.maintenance_db)}",
        ]
        for name, value in variables.items():
            if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                raise ValueError(f"bad psql variable name {name!r}")
            if "\0" in value:
                raise ValueError("NUL in a psql variable")
            args.append(f"--set={name}={value}")
        args += ["--file=-"]
        return args

    def execute(self, sql: str, *, database: str | None = None, **variables: str) -> str:
        """Run statements (autocommit, stopping at the first error); return what psql printed."""
        done = run_tool(
            self._args(database, variables),
            env=self.conn.env(),
            input=sql.encode(),
            timeout=self._timeout,
            what="psql",
        )
        return done.stdout.decode(errors="replace")

    def query_json(self, sql: str, *, database: str | None = None, **variables: str) -> Any:
        """Run statements of which only the last prints: one JSON value (json_agg's may span lines)."""
        out = self.execute(sql, database=database, **variables).strip()
        try:
            return json.loads(out) if out else None
        except ValueError:
            raise QueryFailed(f"psql printed something unexpected: {out[:200]!r}") from None

    def server_version(self) -> tuple[str, int]:
        """("15.20 (Debian ...)", 150020)."""
        row = self.query_json(
            "SELECT json_build_array(current_setting('server_version'),"
            " current_setting('server_version_num')::int);"
        )
        return str(row[0]), int(row[1])

    def database_exists(self, name: str) -> bool:
        return bool(
            self.query_json(
                "SELECT to_json(EXISTS (SELECT FROM pg_database WHERE datname = :'db'));", db=name
            )
        )

    def role_exists(self, name: str) -> bool:
        return bool(
            self.query_json("SELECT to_json(EXISTS (SELECT FROM pg_roles WHERE rolname = :'r'));", r=name)
        )

    def disconnect_all(self, name: str) -> int:
        """Terminate every other session on database ``name``; return how many were still there."""
        found = self.query_json(
            "SELECT to_json(count(pg_terminate_backend(pid))) FROM pg_stat_activity"
            " WHERE datname = :'db' AND pid <> pg_backend_pid();",
            db=name,
        )
        return int(found or 0)


def check_dump_tool(conn: PostgresConnection, tool: str, server_version_num: int) -> str:
    """``tool``'s version line, after checking it can talk to this server (major >= server's)."""
    path = conn.tool(tool)
    version = tool_version(path)
    if major_of(version) < server_major(server_version_num):
        raise ToolMissing(
            f"{tool} {major_of(version)} cannot dump a PostgreSQL {server_major(server_version_num)}"
            f" server: install postgresql-client-{server_major(server_version_num)}"
            " (and set bindir if several versions are installed)"
        )
    return version
