"""What SQL the catalog is sent: for tests that count round trips, not time them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine


class Sent(NamedTuple):
    connection: int
    """Which DBAPI connection it went on (``id()`` of it)."""
    sql: str


@contextmanager
def statements_sent(engine: AsyncEngine, where: Callable[[str], bool] | None = None) -> Iterator[list[Sent]]:
    """Every statement ``engine`` sends while the block runs (those ``where`` accepts), in order."""
    seen: list[Sent] = []

    def record(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if where is None or where(statement):
            seen.append(Sent(id(conn.connection.dbapi_connection), statement))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
