"""Time arithmetic in SQL, the one place where compliance needs dialect-specific SQL.

Interval sums (seconds of breach within a period, per VM) are aggregated by the database so
that a report over 10,000 VMs is one query. Times become epoch seconds: PostgreSQL's
``EXTRACT(EPOCH FROM ...)``; on SQLite, where :class:`app.db.types.UTCDateTime` stores naive
UTC text, ``julianday()``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, cast, extract, func, literal
from sqlalchemy.ext.asyncio import AsyncSession

_UNIX_EPOCH_JULIAN_DAY = 2440587.5


class TimeSql:
    def __init__(self, session: AsyncSession) -> None:
        self.postgresql = session.get_bind().dialect.name == "postgresql"

    def epoch(self, column: Any) -> Any:
        if self.postgresql:
            return cast(extract("epoch", column), Float)
        return (func.julianday(column) - _UNIX_EPOCH_JULIAN_DAY) * 86400.0

    @staticmethod
    def value(instant: datetime) -> Any:
        return literal(instant.timestamp(), Float)

    def greatest(self, a: Any, b: Any) -> Any:
        return func.greatest(a, b) if self.postgresql else func.max(a, b)

    def least(self, a: Any, b: Any) -> Any:
        return func.least(a, b) if self.postgresql else func.min(a, b)

    def clipped_seconds(self, start: Any, end: Any, lo: datetime, hi: datetime) -> Any:
        """Seconds of ``[start, end)`` (``end`` NULL: open, up to ``hi``) inside ``[lo, hi)``."""
        lo_v, hi_v = self.value(lo), self.value(hi)
        begin = self.greatest(self.epoch(start), lo_v)
        stop = self.least(func.coalesce(self.epoch(end), hi_v), hi_v)
        return self.greatest(stop - begin, literal(0.0, Float))
