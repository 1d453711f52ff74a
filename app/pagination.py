"""Limit/offset pagination shared by every list endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")

MAX_PAGE_SIZE = 500


@dataclass(frozen=True)
class PageRequest:
    limit: int = 50
    offset: int = 0


class Page(BaseModel, Generic[T]):
    """One page of a list in a stable order; ``total`` counts every match of the filters."""

    items: list[T]
    total: int
    limit: int
    offset: int
