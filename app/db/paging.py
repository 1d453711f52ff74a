"""Counting a list's matches for its page, up to the page request's cap."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.pagination import PageRequest


async def count_matches(session: AsyncSession, stmt: Select[Any], page: PageRequest) -> int:
    """The rows ``stmt`` selects, counted up to ``page.count_cap``.

    The capped count selects a constant under a LIMIT, so PostgreSQL stops after the cap and can
    answer from an index alone instead of reading every matching row.
    """
    cap = page.count_cap
    if cap is None:
        counted = select(func.count()).select_from(stmt.order_by(None).subquery())
    else:
        bounded: Select[Any] = stmt.with_only_columns(literal_column("1"), maintain_column_froms=True)
        counted = select(func.count()).select_from(bounded.order_by(None).limit(cap).subquery())
    return int((await session.execute(counted)).scalar_one())
