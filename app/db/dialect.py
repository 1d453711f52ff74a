"""The few places where PostgreSQL and SQLite need different SQL, kept in one file."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

S = TypeVar("S", bound=Select[Any])


def lock_for_claim(stmt: S, session: AsyncSession, *of: Any) -> S:
    """Row locks that let concurrent claimers pass each other.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so two replicas claiming at once take different
    jobs instead of waiting for each other. SQLite has no row locks; its transactions take
    the database write lock up front (``BEGIN IMMEDIATE``, see :mod:`app.db.engine`), which
    serialises claimers, and the claim's compare-and-set update does the rest.
    """
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update(skip_locked=True, of=of or None)
    return stmt


def lock_for_decision(stmt: S, session: AsyncSession) -> S:
    """Row locks that make concurrent deciders take turns.

    PostgreSQL: ``FOR UPDATE`` (waiting), so the second of two requests deciding on the same
    rows (an approval, a prune) proceeds only once the first has committed, and its next
    statement sees that outcome. SQLite's transactions are serialised whole (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name == "postgresql":
        return stmt.with_for_update()
    return stmt


def _dialect_insert(session: AsyncSession) -> Any:
    """The dialect's own ``insert`` construct: the generic one has no ``ON CONFLICT``."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


async def insert_ignoring_conflicts(session: AsyncSession, table: Any, rows: list[dict[str, Any]]) -> int:
    """Insert rows, skipping those that break a unique constraint; returns rows inserted.

    Both dialects spell it ``ON CONFLICT DO NOTHING``, through their own insert constructs.
    Replicas rely on it: the unique indexes decide, not a read-then-write. The rows go as one
    executemany with ``RETURNING``, which SQLAlchemy sends as batched multi-row statements compiled
    once ("insertmanyvalues"), so the count is exact (a driver's executemany row count is not:
    asyncpg reports -1). Rows that can be computed by the database go through
    :func:`insert_from_select_ignoring_conflicts` instead.
    """
    if not rows:
        return 0
    insert = _dialect_insert(session)
    key = next(iter(table.primary_key.columns))
    result = await session.execute(insert(table).on_conflict_do_nothing().returning(key), rows)
    return len(result.all())


def insert_from_select_ignoring_conflicts(
    session: AsyncSession, table: Any, columns: list[str], rows: Select[Any]
) -> Any:
    """``INSERT INTO table (columns) SELECT ... ON CONFLICT DO NOTHING`` in the session's dialect:
    the unique indexes decide which rows are new, as in :func:`insert_ignoring_conflicts`."""
    insert = _dialect_insert(session)
    return insert(table).from_select(columns, rows).on_conflict_do_nothing()


def new_uuid(session: AsyncSession) -> Any:
    """A random UUID made by the database, for rows created by ``INSERT ... SELECT``.

    PostgreSQL's ``gen_random_uuid()`` is a version 4 UUID; SQLite stores UUIDs as 32 hex digits,
    and 16 random bytes in hex are as unique (they just lack the version bits).
    """
    from sqlalchemy import func

    if session.get_bind().dialect.name == "postgresql":
        return func.gen_random_uuid()
    return func.lower(func.hex(func.randomblob(16)))


async def serialize_claims(session: AsyncSession) -> None:
    """Claims check concurrency limits (per host, datastore, proxy, globally) by counting
    running jobs; two replicas claiming at once would both see room. On PostgreSQL a
    transaction-scoped advisory lock makes claims take turns (they are short). SQLite's
    ``BEGIN IMMEDIATE`` already does."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        await session.execute(text("SELECT pg_advisory_xact_lock(7364501)"))


async def refresh_state_statistics(session: AsyncSession, table: str) -> None:
    """Re-sample the planner's statistics of ``table.state`` (PostgreSQL's ``ANALYZE``; no-op on SQLite).

    A queue table's state distribution swings daily: a planning tick adds thousands of queued
    rows to a table of hundreds of thousands of finished ones, far below autovacuum's
    "10% changed" trigger, so the planner goes on believing no job is queued or running and
    answers the claim's state lookups by walking every queued row (a claim's compare-and-set
    took 9 ms instead of 0.7 ms, its usage count 6.6 ms instead of 0.5 ms, both under the claim
    lock; docs/benchmarks.md). Sampling one column costs ~0.2 s at 900,000 rows.
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        quoted = session.get_bind().dialect.identifier_preparer.quote_identifier(table)
        await session.execute(text(f"ANALYZE {quoted} (state)"))
