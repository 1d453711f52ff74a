"""All SQL of the metrics endpoint: a few short aggregate queries per scrape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.compliance.models import RpoBreach
from app.compliance.sql import TimeSql
from app.jobs.models import Job
from app.proxies.models import Proxy
from app.restore_points.models import RestorePoint


@dataclass(frozen=True)
class DurationStats:
    kind: str
    #: Cumulative counts per upper bound, in the order of the bounds asked for.
    cumulative: list[int]
    count: int
    seconds: float
    bytes_read: int
    bytes_stored: int


class MetricsRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def jobs_by_state(self) -> list[tuple[str, str, int]]:
        rows = await self.session.execute(
            select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state)
        )
        return [(kind, state, int(n)) for kind, state, n in rows.tuples()]

    async def finished_since(self, since: datetime, bounds: Sequence[float]) -> list[DurationStats]:
        """Durations (claim to end) and bytes of jobs that ended since ``since``, per kind."""
        t = TimeSql(self.session)
        duration = t.epoch(Job.finished_at) - t.epoch(Job.started_at)
        columns = [func.sum(case((duration <= b, 1), else_=0), type_=Integer) for b in bounds]
        rows = await self.session.execute(
            select(
                Job.kind,
                func.count(),
                func.coalesce(func.sum(duration), 0.0),
                func.coalesce(func.sum(Job.bytes_read), 0),
                func.coalesce(func.sum(Job.bytes_stored), 0),
                *columns,
            )
            .where(Job.finished_at >= since, Job.started_at.is_not(None))
            .group_by(Job.kind)
        )
        out = []
        for kind, n, seconds, read, stored, *cumulative in rows.tuples():
            out.append(
                DurationStats(
                    kind, [int(c or 0) for c in cumulative], int(n), float(seconds), int(read), int(stored)
                )
            )
        return out

    async def restore_points_bytes(self) -> tuple[int, int]:
        """(points, bytes stored by them) in the catalog."""
        n, stored = (
            await self.session.execute(
                select(func.count(), func.coalesce(func.sum(RestorePoint.bytes_stored), 0))
            )
        ).one()
        return int(n), int(stored)

    async def open_breaches_by_cause(self) -> dict[str, int]:
        rows = await self.session.execute(
            select(RpoBreach.cause, func.count())
            .where(RpoBreach.ended_at.is_(None))
            .group_by(RpoBreach.cause)
        )
        return {cause: int(n) for cause, n in rows.tuples()}

    async def proxy_heartbeats(self) -> list[datetime | None]:
        stmt = select(Proxy.last_heartbeat_at).where(Proxy.kind == "proxy")  # guest agents are not proxies
        return list((await self.session.execute(stmt)).scalars())
