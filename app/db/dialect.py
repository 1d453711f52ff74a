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
