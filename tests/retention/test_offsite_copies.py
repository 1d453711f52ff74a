"""Copies that need another try: a failed copy is queued again after a while, a point of an
offsite-copying policy that never got a copy gets one, and nothing is queued twice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from app.clock import ManualClock
from app.jobs.models import Job
from app.policies.models import Policy
from app.restore_points.models import RestorePoint
from app.retention.offsite_loop import OffsiteLoop
from app.retention.onsite import OffsiteRepository
from tests.retention.conftest import World


async def test_failed_and_missing_copies_are_queued_again_once(
    world: World, tmp_path: Path, clock: ManualClock
) -> None:
    vm = await world.vm("web")
    policy = await world.policy([vm], daily=7, weekly=0, monthly=0)
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(update(Policy).where(Policy.id == policy).values(offsite_copy=True))
    now = clock.now()
    never = await world.point(vm, now - timedelta(hours=3), policy)  # copy_status "none"
    failed = await world.point(vm, now - timedelta(hours=2), policy)
    old = await world.point(vm, now - timedelta(days=5), policy)  # beyond the back-fill window
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(RestorePoint)
            .where(RestorePoint.id == failed)
            .values(copy_status="copy_failed", copy_error="boom")
        )
    settings = world.ctx.settings.model_copy(update={"offsite_repository": str(tmp_path / "offsite")})
    loop = OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock)

    assert await loop.requeue_copies() == 2
    assert await loop.requeue_copies() == 0  # their copy jobs are queued: nothing twice
    async with world.ctx.sessionmaker() as session:
        jobs = list((await session.execute(select(Job).where(Job.kind == "offsite_copy"))).scalars())
        rows = await session.execute(select(RestorePoint.id, RestorePoint.copy_status))
        statuses = {point_id: status for point_id, status in rows.tuples()}
    assert sorted(j.params["restore_point_id"] for j in jobs) == sorted([str(never), str(failed)])
    assert statuses[never] == statuses[failed] == "copying" and statuses[old] == "none"

    # The copy fails again: it is not queued again until an hour after that failure.
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.kind == "offsite_copy")
            .values(state="failed", finished_at=clock.now(), error="offsite unreachable")
        )
        await session.execute(
            update(RestorePoint).where(RestorePoint.id.in_([never, failed])).values(copy_status="copy_failed")
        )
    clock.advance(timedelta(minutes=20))
    assert await loop.requeue_copies() == 0
    clock.advance(timedelta(hours=1))
    assert await loop.requeue_copies() == 2


async def test_a_cancelled_copy_leaves_its_point_copy_failed_not_copying(
    world: World, tmp_path: Path, clock: ManualClock
) -> None:
    """Cancelling a queued copy ends it the way a failed copy does: the point says so, instead of
    'copying' with no job behind it."""
    vm = await world.vm("web")
    policy = await world.policy([vm], daily=7, weekly=0, monthly=0)
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(update(Policy).where(Policy.id == policy).values(offsite_copy=True))
    point = await world.point(vm, clock.now() - timedelta(hours=3), policy)
    settings = world.ctx.settings.model_copy(update={"offsite_repository": str(tmp_path / "offsite")})
    assert await OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock).requeue_copies() == 1
    async with world.ctx.sessionmaker() as session:
        (job,) = (await session.execute(select(Job).where(Job.kind == "offsite_copy"))).scalars()
    cancelled = await world.operator.post(f"/api/v1/jobs/{job.id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    shown = (await world.operator.get(f"/api/v1/restore-points/{point}")).json()
    assert shown["copy_status"] == "copy_failed", shown
