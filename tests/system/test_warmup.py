"""Start-up warm-up on the real catalog: the pool's connections are open and every hot statement
has run on each before the first request, and a catalog that fails it does not stop the start."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import QueuePool

import app.integrations.repository as integrations
import app.inventory.repository as inventory
from app.db.engine import create_engine
from app.db.warmup import HOT_STATEMENTS, hot_statement, warm_pool
from tests.support.sql import statements_sent


def test_the_ticket_paths_statements_are_registered() -> None:
    for builder in (
        integrations._for_message,
        integrations._point_of_vm,
        integrations._point_at,
        inventory._host_and_datastore,
    ):
        assert builder in HOT_STATEMENTS


async def test_each_pooled_connection_runs_each_hot_statement(engine: AsyncEngine) -> None:
    pool = engine.sync_engine.pool
    assert isinstance(pool, QueuePool)
    with statements_sent(engine) as seen:
        opened = await warm_pool(engine)
    assert opened == pool.size() > 1
    assert pool.checkedin() == opened  # returned to the pool, none left checked out
    connections = {conn for conn, _ in seen}
    assert len(connections) == opened
    for builder in HOT_STATEMENTS:
        sql = str(builder().compile(dialect=engine.dialect))
        assert sum(statement == sql for _, statement in seen) == opened, sql
    # No transaction is left open: a write on the catalog goes through at once (SQLite would
    # otherwise wait for its write lock).
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE tenants SET name = name WHERE 1 = 0"))


async def test_a_failing_warm_up_is_logged_and_the_catalog_still_serves(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    broken = hot_statement(lambda: select(text("1")).select_from(text("no_such_table")))
    try:
        assert await warm_pool(engine) == 0
    finally:
        HOT_STATEMENTS.remove(broken)
    assert "could not prepare the catalog's connections" in caplog.text
    assert engine.sync_engine.pool.checkedout() == 0
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_catalog_that_does_not_answer_delays_the_start_only_until_the_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A real socket that accepts and never speaks (a server stuck, or a firewall that drops):
    the driver alone would wait a minute before the process could listen."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    engine = create_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/test")
    try:
        started = time.monotonic()
        assert await warm_pool(engine, timeout_s=0.5) == 0
        assert time.monotonic() - started < 30  # the driver alone waits 60 s
    finally:
        await engine.dispose()
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()
    assert accepted  # it did try the catalog
    assert "no answer in 0.5 s" in caplog.text
