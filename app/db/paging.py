"""One page of a list and its matches' total, counted no further than the page request allows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Select, func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.pagination import PageRequest

T = TypeVar("T")


async def fetch_page(
    session: AsyncSession, stmt: Select[tuple[T]], order: Sequence[Any], page: PageRequest
) -> tuple[list[T], int]:
    """The page of ``stmt`` (one entity or column per row) in ``order``, and the total."""
    rows = await session.execute(stmt.order_by(*order).limit(page.limit).offset(page.offset))
    items = list(rows.scalars())
    return items, await total_for_page(session, stmt, page, len(items))


async def total_for_page(session: AsyncSession, stmt: Select[Any], page: PageRequest, returned: int) -> int:
    """The total of a list whose page held ``returned`` rows.

    A page that is not full, and is not past the end, already tells the total (most lists of a
    tenant's policies, proxies or vCenters fit in one page): the count's round trip is skipped.
    """
    if returned < page.limit and (returned > 0 or page.offset == 0):
        return page.offset + returned
    return await count_matches(session, stmt, page)


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
