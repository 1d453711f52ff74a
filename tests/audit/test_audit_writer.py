"""The audit writer's group commit, on the real catalog: requests that end together share one
INSERT, each returns only once its own row is committed, and a failed write reaches them all."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.audit.schemas import Actor, AuditEntry
from app.audit.service import AuditService
from app.audit.writer import AuditWriter
from app.context import AppContext
from tests.support.sql import statements_sent


def entry(ctx: AppContext, n: int, **fields: Any) -> AuditEntry:
    return AuditEntry(
        at=ctx.clock.now(),
        request_id=f"req-{n:03d}",
        actor=Actor.ANONYMOUS,
        action="POST /x",
        status=201,
        **fields,
    )


async def stored(ctx: AppContext) -> list[str]:
    async with ctx.sessionmaker() as session:
        rows = await session.execute(select(AuditEvent.request_id).order_by(AuditEvent.at, AuditEvent.id))
        return list(rows.scalars())


async def test_requests_ending_together_share_one_insert_and_keep_their_order(ctx: AppContext) -> None:
    writer = AuditWriter(ctx.sessionmaker)
    with statements_sent(ctx.engine, where=lambda sql: sql.startswith("INSERT INTO audit_events")) as inserts:
        await writer.write(entry(ctx, 0))  # alone: written at once
        assert await stored(ctx) == ["req-000"]
        # Fields missing in some rows (no key, no object) must not split the batch.
        await asyncio.gather(
            *(writer.write(entry(ctx, n, object_id="o" if n % 2 else None)) for n in range(1, 21))
        )
    assert len(inserts) == 2
    assert await stored(ctx) == [f"req-{n:03d}" for n in range(21)]


async def test_every_waiter_of_a_failed_batch_hears_of_it(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: AuditService, entries: list[AuditEntry]) -> None:
        raise RuntimeError("catalog unreachable")

    monkeypatch.setattr(AuditService, "record_many", broken)
    writer = AuditWriter(ctx.sessionmaker)
    results = await asyncio.gather(*(writer.write(entry(ctx, n)) for n in range(5)), return_exceptions=True)
    assert [str(r) for r in results] == ["catalog unreachable"] * 5
    monkeypatch.undo()
    await writer.write(entry(ctx, 9))  # the writer recovers with the next request
    assert await stored(ctx) == ["req-009"]


async def test_a_cancelled_request_leaves_the_others_written(ctx: AppContext) -> None:
    writer = AuditWriter(ctx.sessionmaker)
    first = asyncio.create_task(writer.write(entry(ctx, 1)))
    others = [asyncio.create_task(writer.write(entry(ctx, n))) for n in range(2, 6)]
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(*others)
    with pytest.raises(asyncio.CancelledError):
        await first
    # The cancelled request's row was already in the batch: it is written with the others.
    assert await stored(ctx) == [f"req-{n:03d}" for n in range(1, 6)]


async def test_a_stopped_writer_releases_its_waiters(
    ctx: AppContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server shutting down cancels the flusher mid-write: the requests waiting for it are told
    instead of waiting forever, and the next request starts a new flusher."""
    started = asyncio.Event()

    async def stuck(self: AuditService, entries: list[AuditEntry]) -> None:
        started.set()
        await asyncio.sleep(3600)

    monkeypatch.setattr(AuditService, "record_many", stuck)
    writer = AuditWriter(ctx.sessionmaker)
    waiting = [asyncio.create_task(writer.write(entry(ctx, n))) for n in range(3)]
    await started.wait()
    late = asyncio.create_task(writer.write(entry(ctx, 3)))  # queued behind the stuck batch
    await asyncio.sleep(0)
    assert writer._flusher is not None
    writer._flusher.cancel()
    results = await asyncio.gather(*waiting, late, return_exceptions=True)
    assert [str(r) for r in results] == ["the audit writer was stopped"] * 4
    monkeypatch.undo()
    await writer.write(entry(ctx, 9))
    assert await stored(ctx) == ["req-009"]
