"""Limit/offset pagination shared by every list endpoint.

A list's ``total`` is counted up to a cap (``VMR_LIST_COUNT_LIMIT``, 10,000 by default) unless the
caller asks for the exact figure: counting 900,000 jobs exactly costs PostgreSQL 40-100 ms on every
page, which is most of what a portal's job list costs, while "10,000 or more" is all a pager
needs. The cap always reaches past the requested page, so ``total > offset + limit`` still tells
whether a next page exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")

MAX_PAGE_SIZE = 500
#: Beyond any list's length, within the catalog's 64-bit OFFSET (a larger one was a 500).
MAX_OFFSET = 2**62
DEFAULT_COUNT_LIMIT = 10_000


@dataclass(frozen=True)
class PageRequest:
    limit: int = 50
    offset: int = 0
    count_limit: int | None = None
    """Matches counted at most (the page's reach if larger); None counts every match."""

    @property
    def count_cap(self) -> int | None:
        """How many matches the count stops at: the limit, or one past the page if that is more."""
        if self.count_limit is None:
            return None
        return max(self.count_limit, self.offset + self.limit + 1)

    def is_exact(self, total: int) -> bool:
        """Whether ``total`` is every match, not the count's cap."""
        cap = self.count_cap
        return cap is None or total < cap


class Page(BaseModel, Generic[T]):
    """One page of a list in a stable order."""

    items: list[T]
    total: int = Field(
        description="Matches of the filters. When total_exact is false the count stopped here: "
        "there are at least this many (ask exact_total=true for the exact figure)."
    )
    total_exact: bool = Field(description="Whether total counts every match.")
    limit: int
    offset: int

    @classmethod
    def of(cls, items: list[Any], total: int, page: PageRequest, *, exact: bool | None = None) -> Page[Any]:
        """The page of ``items``; ``exact`` overrides the cap test for totals not counted in SQL."""
        return cls(
            items=items,
            total=total,
            total_exact=page.is_exact(total) if exact is None else exact,
            limit=page.limit,
            offset=page.offset,
        )
