"""The outcome of ``vmrecovery repository verify``, recorded as the verify alert.

Verify runs outside the server (a command an operator or a timer runs), so it records its
outcome itself: damage opens the ``verify_damage`` alert (announced to the operators'
integrations like every alert), a clean run closes it. The alert's detail is the stored result.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from app.alerts.service import AlertService
from app.chunkstore.verify import VerifyReport
from app.clock import SystemClock
from app.db.engine import create_engine, create_sessionmaker

#: Lists in the alert's detail stop here (the command's output has them all).
DETAIL_LIST_MAX = 100


def verify_summary(report: VerifyReport) -> dict[str, Any]:
    points = report.affected_restore_points
    exports = report.affected_exports
    return {
        "chunks_checked": report.chunks_checked,
        "bytes_checked": report.bytes_checked,
        "restore_points": report.restore_points,
        "chunks_damaged": len(report.damaged),
        "chunks_missing": len(report.missing),
        "objects_damaged": len(report.damaged_objects),
        "restore_points_affected": points[:DETAIL_LIST_MAX],
        "restore_points_affected_total": len(points),
        "restore_archives_affected": exports[:DETAIL_LIST_MAX],
    }


async def _record(database_url: str, report: VerifyReport) -> None:
    engine = create_engine(database_url)
    try:
        async with create_sessionmaker(engine).begin() as session:
            await AlertService(session).record_verify(
                SystemClock().now(), not report.ok, verify_summary(report)
            )
    finally:
        await engine.dispose()


def record_in_catalog(database_url: str, report: VerifyReport) -> str | None:
    """Record the outcome; returns why it could not be, for the command to print (the verify
    itself stands: its exit status and output do not depend on the catalog)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return f"no catalog at {url.database}: the outcome is not recorded as an alert"
    try:
        asyncio.run(_record(database_url, report))
    except Exception as exc:
        return f"the outcome could not be recorded in the catalog ({type(exc).__name__}: {exc})"
    return None
