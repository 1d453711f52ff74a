"""A new process opens its catalog connections and prepares its hot statements before it serves.

Left to themselves, a pool opens connections on the requests that find none idle (~4 ms of
CPU and ~8 ms in all each: connect, authenticate, the driver's type codecs), SQLAlchemy compiles
a statement on its first execution in the process (the ticket path's seven took 62 ms together
on a slow day) and asyncpg prepares it on each connection's first use. A replica put behind a
load balancer under load paid for all of it in its first second: at 50 requests/s, most of
that second's answers came over 50 ms (docs/benchmarks.md, inbound ticket webhooks). Paid here,
before the server listens, no request waits for it. Writes (ORM inserts) are not warmed: they
cannot run without rows to write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.pool import QueuePool

log = logging.getLogger(__name__)

StatementBuilder = TypeVar("StatementBuilder", bound=Callable[[], Select[Any]])

#: Builders of read statements on hot paths whose every parameter is a ``bindparam``.
HOT_STATEMENTS: list[Callable[[], Select[Any]]] = []


def hot_statement(builder: StatementBuilder) -> StatementBuilder:
    """Register a statement builder (a ``functools.cache``'d function of no arguments returning a
    SELECT) for the start-up warm-up. Run with its unset parameters NULL, it matches no row."""
    HOT_STATEMENTS.append(builder)
    return builder


async def warm_pool(engine: AsyncEngine, timeout_s: float = 10.0) -> int:
    """Open the pool's steady connections and run each hot statement once on each; returns how
    many connections were opened (0 when the warm-up failed).

    Every connection is held until all are open (else the pool would hand back the same one),
    and its transaction is rolled back at once, so that SQLite's write lock (BEGIN IMMEDIATE) is
    not held across the loop. A failure, or a catalog that does not answer within ``timeout_s``
    (the driver's own connect timeout is a minute), is logged, not raised: the process still
    starts at once and ``/readyz`` says what is wrong with the catalog.
    """
    pool = engine.sync_engine.pool
    size = pool.size() if isinstance(pool, QueuePool) else 1
    statements = [builder() for builder in HOT_STATEMENTS]
    params = [s.compile(dialect=engine.dialect).params for s in statements]  # unset: None
    try:
        async with asyncio.timeout(timeout_s), contextlib.AsyncExitStack() as held:
            for _ in range(size):
                conn = await held.enter_async_context(engine.connect())
                async with AsyncSession(bind=conn) as session:
                    await session.execute(text("SELECT 1"))
                    for statement, values in zip(statements, params, strict=True):
                        await session.execute(statement, values)
                await conn.rollback()
    except Exception as exc:  # start anyway: readiness reports the catalog
        reason = f"no answer in {timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc)
        log.warning("could not prepare the catalog's connections at start-up: %s", reason)
        return 0
    return size
