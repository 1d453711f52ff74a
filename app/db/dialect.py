"""The few places where PostgreSQL and SQLite need different SQL, kept in one file."""

from __future__ import annotations

from typing import Any, Literal, TypeVar, overload

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


@overload
async def insert_ignoring_conflicts(
    session: AsyncSession, table: Any, rows: list[dict[str, Any]], *, count: Literal[True] = True
) -> int: ...


@overload
async def insert_ignoring_conflicts(
    session: AsyncSession, table: Any, rows: list[dict[str, Any]], *, count: Literal[False]
) -> int | None: ...


async def insert_ignoring_conflicts(
    session: AsyncSession, table: Any, rows: list[dict[str, Any]], *, count: bool = True
) -> int | None:
    """Insert rows, skipping those that break a unique constraint; returns rows inserted.

    Both dialects spell it ``ON CONFLICT DO NOTHING``, through their own insert constructs.
    Planners on several replicas rely on it: the unique indexes decide, not a read-then-write.
    With ``count`` the rows go as one executemany with ``RETURNING``, which SQLAlchemy sends as
    batched multi-row statements compiled once ("insertmanyvalues"), so the count is exact (a
    driver's executemany row count is not: asyncpg reports -1). Without it they go as the driver's
    own executemany, about twice as fast for thousands of rows, and None is returned: callers that
    can count otherwise (the planner counts its slot's jobs) take that path.
    """
    if not rows:
        return 0
    from sqlalchemy.dialects import postgresql, sqlite

    insert: Any = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    if not count:
        await session.execute(insert(table).on_conflict_do_nothing(), rows)
        return None
    key = next(iter(table.primary_key.columns))
    result = await session.execute(insert(table).on_conflict_do_nothing().returning(key), rows)
    return len(result.all())


async def serialize_claims(session: AsyncSession) -> None:
    """Claims check concurrency limits (per host, datastore, proxy, globally) by counting
    running jobs; two replicas claiming at once would both see room. On PostgreSQL a
    transaction-scoped advisory lock makes claims take turns (they are short). SQLite's
    ``BEGIN IMMEDIATE`` already does."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        await session.execute(text("SELECT pg_advisory_xact_lock(7364501)"))
