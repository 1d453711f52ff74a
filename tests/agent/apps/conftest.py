"""Fixtures for the application backup tests: the real PostgreSQL and MariaDB servers of the test
machine, driven through their client tools exactly as the guest agent drives them.

Every database, role or user a test creates is named with the test's own ``vmr_t_<random>`` prefix
and dropped afterwards. A missing server or client tool fails the test with the Debian package to
install, never a skip: these paths would otherwise go untested without anyone noticing.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from app.agent.apps import mysql_restore, postgres_restore
from app.agent.apps.errors import QueryFailed
from app.agent.apps.mysql_client import MysqlClient, MysqlConnection, ident, json_list
from app.agent.apps.postgres_client import PostgresConnection, Psql
from app.chunkstore import Repository
from tests.chunkstore.conftest import new_repo

PG = PostgresConnection(host="127.0.0.1", port=5432, user="postgres", maintenance_db="test")
MY = MysqlConnection(host="127.0.0.1", port=3306, user="root")


def _require_tools(names: list[str], package: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install {package}", pytrace=False)


@pytest.fixture(scope="session")
def pg() -> PostgresConnection:
    _require_tools(["psql", "pg_dump", "pg_restore"], "postgresql-client")
    try:
        Psql(PG).execute("SELECT 1;")
    except QueryFailed as exc:
        pytest.fail(
            f"PostgreSQL at 127.0.0.1:5432 (user postgres, trust) is not reachable: {exc}", pytrace=False
        )
    return PG


@pytest.fixture(scope="session")
def my() -> MysqlConnection:
    if shutil.which("mariadb") is None and shutil.which("mysql") is None:
        _require_tools(["mariadb"], "mariadb-client")
    if shutil.which("mariadb-dump") is None and shutil.which("mysqldump") is None:
        _require_tools(["mariadb-dump"], "mariadb-client")
    try:
        MysqlClient(MY).execute("SELECT 1;")
    except QueryFailed as exc:
        pytest.fail(f"MariaDB at 127.0.0.1:3306 (root, no password) is not reachable: {exc}", pytrace=False)
    return MY


@pytest.fixture
def prefix() -> str:
    return f"vmr_t_{secrets.token_hex(4)}"


def pg_databases(psql: Psql, *prefixes: str) -> set[str]:
    names = psql.query_json("SELECT coalesce(json_agg(datname), '[]'::json) FROM pg_database;")
    return {n for n in names if n.startswith(prefixes)}


def my_databases(client: MysqlClient, *prefixes: str) -> set[str]:
    names = client.query_json(json_list("SCHEMA_NAME", "FROM information_schema.SCHEMATA"))
    return {n for n in names or () if n.startswith(prefixes)}


def own_staging(monkeypatch: pytest.MonkeyPatch, module: ModuleType, prefix: str) -> tuple[str, str]:
    """Give this test's restores temporary database names of their own, so that a leak check (and the
    clean-up after it) never touches another test run's restore in progress."""
    staging = f"{module.STAGING_PREFIX}{prefix}_"
    old = f"{module.OLD_PREFIX}{prefix}_"
    monkeypatch.setattr(module, "STAGING_PREFIX", staging)
    monkeypatch.setattr(module, "OLD_PREFIX", old)
    return staging, old


@pytest.fixture
def pg_scope(pg: PostgresConnection, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test's prefix; afterwards its databases and roles are dropped and no restore leftovers
    (temporary databases) may remain."""
    psql = Psql(pg)
    staging = own_staging(monkeypatch, postgres_restore, prefix)
    yield prefix
    leaked = pg_databases(psql, *staging)
    for name in pg_databases(psql, prefix) | leaked:
        psql.execute('DROP DATABASE IF EXISTS :"db" WITH (FORCE);', db=name)
    roles = psql.query_json(
        "SELECT coalesce(json_agg(rolname), '[]'::json) FROM pg_roles WHERE starts_with(rolname, :'p');",
        p=prefix,
    )
    for role in roles:
        psql.execute('DROP ROLE IF EXISTS :"r";', r=role)
    assert not leaked, f"restore left temporary databases behind: {leaked}"


@pytest.fixture
def my_scope(my: MysqlConnection, prefix: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    client = MysqlClient(my)
    staging = own_staging(monkeypatch, mysql_restore, prefix)
    yield prefix
    leaked = my_databases(client, *staging)
    for name in my_databases(client, prefix) | leaked:
        client.execute(f"DROP DATABASE IF EXISTS {ident(name)};")
    users = client.query_json(json_list("User", f"FROM mysql.user WHERE User LIKE '{prefix}%'"))
    for user in users or ():
        client.execute(f"DROP USER IF EXISTS '{user}'@'%';")
    assert not leaked, f"restore left temporary databases behind: {leaked}"


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return new_repo(tmp_path / "repo")


def damage_a_chunk(repo_root: Path, *, skip: int = 1) -> Path:
    """Flip bytes in the middle of one stored chunk (not the first); return its path."""
    chunks = sorted(
        p for p in (repo_root / "chunks").rglob("*") if p.is_file() and not p.name.startswith(".")
    )
    assert len(chunks) > skip, "the stream needs several chunks for this test"
    victim = chunks[skip]
    data = bytearray(victim.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    victim.write_bytes(bytes(data))
    return victim
