"""pytest plugin: the catalog on real PostgreSQL and real SQLite.

Migrations run once per session and dialect. Each test gets a clean catalog: on SQLite a copy
of the migrated template file, on PostgreSQL the same database with every table truncated
after the test.

Under pytest-xdist each worker has a PostgreSQL database of its own (``test_gw0``, ...), created
next to the configured one, so that workers never truncate each other's tables.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from app.db.migrate import upgrade_to_head
from app.db.models import Base

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DIALECTS = ["sqlite", "postgresql"]


def base_pg_url() -> str:
    """The database the run was given (``VMR_TEST_DATABASE_URL``, or the local default)."""
    return os.environ.get("VMR_TEST_DATABASE_URL", DEFAULT_PG_URL)


def pg_url() -> str:
    """This process's database: the given one, or under xdist the worker's own beside it."""
    url = base_pg_url()
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return url
    parsed = make_url(url)
    return parsed.set(database=f"{parsed.database}_{worker}").render_as_string(hide_password=False)


def _in_thread(fn: object, *args: object) -> None:
    # Alembic's env runs its own event loop; keep it off the test loop's thread.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(fn, *args).result()  # type: ignore[arg-type]


async def _connect(url: str) -> asyncpg.Connection:
    u = make_url(url)
    return await asyncpg.connect(
        host=u.host, port=u.port or 5432, user=u.username, password=u.password, database=u.database
    )


async def _create_database(base: str, url: str) -> None:
    """Create ``url``'s database through ``base``'s server when it does not exist yet."""
    name = make_url(url).database
    conn = await _connect(base)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _reset_pg_schema(url: str) -> None:
    conn = await _connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()


def _prepare_pg(url: str) -> None:
    if url != base_pg_url():
        asyncio.run(_create_database(base_pg_url(), url))
    asyncio.run(_reset_pg_schema(url))
    upgrade_to_head(url)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "template.db"
    _in_thread(upgrade_to_head, f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_ready() -> str:
    url = pg_url()
    try:
        _in_thread(_prepare_pg, url)
    except OSError as exc:
        pytest.fail(f"PostgreSQL at {url} is not reachable ({exc}); run the test bootstrap (scripts/test.sh)")
    return url


@pytest.fixture(params=DIALECTS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A clean, migrated catalog on each dialect."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "catalog.db"
        shutil.copyfile(template, path)
        yield f"sqlite+aiosqlite:///{path}"
    else:
        yield request.getfixturevalue("postgres_ready")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(db_url)
    try:
        yield engine
    finally:
        if engine.dialect.name == "postgresql":
            tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {tables} CASCADE"))
        await engine.dispose()
