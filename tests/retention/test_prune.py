"""Pruning through the service and the loop: catalog rows, repository manifests, restores in use.

Runs on SQLite and PostgreSQL, with real restore points in a real repository.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from app.chunkstore import gc, verify
from app.clock import ManualClock
from app.domain.retention import KeepReason
from app.jobs.models import Job
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from app.retention.loop import RetentionLoop
from app.retention.onsite import OnsiteRepository
from app.retention.pruner import Pruner
from app.retention.repository import RetentionRepository
from app.retention.service import RetentionService
from tests.retention.conftest import DISK, World, backup_job, berlin_evening, disk_for, ids

DAILY, WEEKLY, IN_USE = KeepReason.DAILY, KeepReason.WEEKLY, KeepReason.IN_USE


def day(i: int) -> datetime:
    """22:00 Berlin on 2026-06-10 (a Wednesday) minus ``i`` days."""
    return berlin_evening(datetime(2026, 6, 10) - timedelta(days=i))


def pruner(world: World) -> Pruner:
    return Pruner(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings))


async def catalog(world: World, vm_id: uuid.UUID) -> set[str]:
    async with world.ctx.sessionmaker() as session:
        return ids(
            (await session.execute(select(RestorePoint.id).where(RestorePoint.vm_id == vm_id))).scalars()
        )


def requested_restore(world: World, vm_id: uuid.UUID, point_id: uuid.UUID) -> Restore:
    """A restore of ``point_id`` to a new VM, requested now (the point is in use while it is)."""
    return Restore(
        id=uuid.uuid4(),
        tenant_id=world.tenant_id,
        vm_id=vm_id,
        restore_point_id=point_id,
        type="vm",
        target="new",
        target_params={},
        state="requested",
        source_location="onsite",
        requested_at=world.ctx.clock.now(),
        result={},
    )


async def six_days(world: World) -> tuple[uuid.UUID, uuid.UUID, list[uuid.UUID]]:
    """A VM under daily=2, weekly=1, monthly=0 with one point a day, Fri 06-05 to Wed 06-10.

    Kept: Wed 06-10 and Tue 06-09 (daily); their week (Jun 8-14) is covered, so Mon 06-08 is
    passed over and the weekly point is Sun 06-07; Sat 06-06 and Fri 06-05 share its week.
    """
    vm = await world.vm("web")
    policy = await world.policy([vm], daily=2, weekly=1, monthly=0)
    points = [await world.point(vm, day(i), policy) for i in range(6)]  # points[0] is the newest
    return vm, policy, points


async def test_prune_deletes_rows_and_manifests_and_gc_then_frees_their_chunks(world: World) -> None:
    vm, policy, points = await six_days(world)
    other = await world.vm("db")  # no policy ever protected it: never pruned
    others = [await world.point(other, day(i)) for i in range(3)]

    result = await pruner(world).prune_vm(vm)
    assert result.plan.policy_id == policy
    assert result.plan.keep == {points[0]: DAILY, points[1]: DAILY, points[3]: WEEKLY}
    assert result.plan.prune == [points[5], points[4], points[2]]  # oldest first
    assert sorted(result.manifests_removed) == sorted(str(p) for p in result.plan.prune)

    kept = ids([points[0], points[1], points[3]])
    assert await catalog(world, vm) == kept
    assert set(world.repo.list_restore_points()) == kept | ids(others)
    for gone in result.plan.prune:
        assert list(world.repo.backend.list(f"indexes/{gone}/")) == []

    assert (await pruner(world).prune_vm(other)).plan.prune == []
    again = await pruner(world).prune_vm(vm)
    assert again.plan.prune == [] and again.manifests_removed == []

    # Three chunks of each pruned point were its own; no backup runs, so no grace is needed.
    report = gc(world.repo, timedelta(0))
    assert report.chunks_deleted == 9 and report.bytes_freed > 0
    assert verify(world.repo, workers=1).ok
    for point_id in [points[0], points[1], points[3], *others]:
        assert world.restored(point_id) == disk_for(point_id)
        assert len(world.restored(point_id)) == DISK


async def test_points_that_restores_use_are_kept(world: World) -> None:
    vm, _, points = await six_days(world)
    await world.restore(points[5], vm, "requested")  # in use: kept, and counts for no rule
    finished = await world.restore(points[4], vm, "succeeded")  # history only: does not hold it

    result = await pruner(world).prune_vm(vm)
    assert result.plan.keep == {points[0]: DAILY, points[1]: DAILY, points[3]: WEEKLY, points[5]: IN_USE}
    assert result.plan.held == []
    assert sorted(result.plan.prune) == sorted([points[2], points[4]])
    assert await catalog(world, vm) == ids([points[0], points[1], points[3], points[5]])
    async with world.ctx.sessionmaker() as session:
        record = await session.get(Restore, finished)
        assert record is not None and record.restore_point_id is None  # history kept, reference cleared
    assert str(points[5]) in world.repo.list_restore_points()


async def test_a_restore_requested_after_the_plan_stops_the_delete(world: World) -> None:
    vm, _, points = await six_days(world)
    async with world.ctx.sessionmaker.begin() as session:
        service = RetentionService(session)
        plan = await service.plan_vm(vm)
        assert points[2] in plan.prune
        session.add(requested_restore(world, vm, points[2]))
        await session.flush()
        deleted = await service.delete_rows(plan.prune)
    assert set(deleted) == {points[4], points[5]}
    assert str(points[2]) in await catalog(world, vm)


async def test_the_latest_point_is_never_pruned(world: World) -> None:
    vm = await world.vm("web")
    policy = await world.policy([vm], daily=1, weekly=0, monthly=0)
    # Three points on one day; the latest is being restored, so it counts for no rule.
    times = [day(0), day(0) - timedelta(hours=1), day(0) - timedelta(hours=2)]
    points = [await world.point(vm, at, policy) for at in times]
    await world.restore(points[0], vm, "running")
    result = await pruner(world).prune_vm(vm)
    assert result.plan.keep == {points[0]: IN_USE, points[1]: DAILY}
    assert await catalog(world, vm) == ids(points[:2])

    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(update(Restore).values(state="succeeded"))
    # The restore is over: the latest point counts again, and the one kept in its stead goes.
    after = (await pruner(world).prune_vm(vm)).plan
    assert after.keep == {points[0]: DAILY} and after.prune == [points[1]]
    assert await catalog(world, vm) == ids(points[:1])


async def test_loop_prunes_vms_after_their_backups_and_everything_daily(world: World) -> None:
    clock = world.ctx.clock
    assert isinstance(clock, ManualClock)
    clock.set(datetime(2026, 6, 10, 21, 0, tzinfo=UTC))
    a, b = await world.vm("a"), await world.vm("b")
    policy = await world.policy([a, b], daily=1, weekly=0, monthly=0)
    _, a2 = [await world.point(a, day(i), policy) for i in (2, 1)]
    _, b2 = [await world.point(b, day(i), policy) for i in (2, 1)]
    loop = RetentionLoop(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock)

    await loop.run_once()  # the first pass is a full one
    assert loop.last_report.points_deleted == 2
    assert await catalog(world, a) == ids([a2]) and await catalog(world, b) == ids([b2])

    clock.advance(timedelta(minutes=1))
    a3 = await world.point(a, clock.now(), policy, job=True)  # a backup of A succeeded
    b3 = await world.point(b, clock.now(), policy)  # (a point of B, but no backup job finished)
    clock.advance(timedelta(minutes=1))
    await loop.run_once()
    assert await catalog(world, a) == ids([a3])  # pruned right after its backup
    assert await catalog(world, b) == ids([b2, b3])  # not looked at
    assert set(world.repo.list_restore_points()) == ids([a3, b2, b3])

    clock.advance(timedelta(hours=23))
    await loop.run_once()
    assert await catalog(world, b) == ids([b2, b3])  # not a day since the full pass yet
    clock.advance(timedelta(hours=1))
    await loop.run_once()
    assert await catalog(world, b) == ids([b3])
    assert set(world.repo.list_restore_points()) == ids([a3, b3])
    assert loop.last_report.failed_vms == []


async def test_an_application_backup_is_followed_by_its_prune(world: World) -> None:
    """A guest agent's dump that succeeded gets its VM's retention applied at the next short pass,
    as an image backup does, not only at the daily full pass."""
    clock = world.ctx.clock
    assert isinstance(clock, ManualClock)
    clock.set(datetime(2026, 6, 10, 21, 0, tzinfo=UTC))
    vm = await world.vm("db")
    policy = await world.policy([vm], daily=1, weekly=0, monthly=0)
    first = await world.point(vm, day(1), policy, kind="application")
    loop = RetentionLoop(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock)
    await loop.run_once()  # the full pass
    clock.advance(timedelta(minutes=1))
    dump = await world.point(vm, clock.now(), policy, job=True, kind="application")
    clock.advance(timedelta(minutes=1))
    await loop.run_once()
    assert loop.last_report.vms == 1 and loop.last_report.points_deleted == 1
    assert await catalog(world, vm) == ids([dump])
    assert str(first) not in world.repo.list_restore_points()


async def test_full_pass_removes_orphan_manifests_that_retention_prunes(world: World) -> None:
    a, busy = await world.vm("a"), await world.vm("busy")
    policy = await world.policy([a, busy], daily=1, weekly=0, monthly=0)
    a1, _, a3 = [await world.point(a, day(i), policy) for i in (3, 2, 1)]
    # A crash after the catalog commit and before the manifest went: a1 is an orphan manifest.
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(RestorePoint.__table__.delete().where(RestorePoint.id == a1))
    # A backup of A whose manifest is committed but whose row is not recorded yet (newer than
    # every catalog point): left alone.
    in_flight = uuid.uuid4()
    world.write_manifest(in_flight, a, day(0), disk_for(in_flight))
    # Orphans of a VM the catalog does not know, and of a VM whose backup is running: left alone.
    stranger = uuid.uuid4()
    world.write_manifest(stranger, uuid.uuid4(), day(5), disk_for(stranger))
    b1 = await world.point(busy, day(2), policy)
    busy_orphan = uuid.uuid4()
    world.write_manifest(busy_orphan, busy, day(4), disk_for(busy_orphan))
    async with world.ctx.sessionmaker.begin() as session:
        session.add(backup_job(uuid.uuid4(), world.tenant_id, busy, world.ctx.clock.now(), "running"))

    report = await pruner(world).prune_all()
    assert report.points_deleted == 1 and report.orphans_deleted == 1  # a2, and orphan a1
    assert set(world.repo.list_restore_points()) == ids([a3, in_flight, stranger, b1, busy_orphan])
    assert await catalog(world, a) == ids([a3])


async def test_orphan_application_manifests_are_judged_as_application_points(world: World) -> None:
    a = await world.vm("a")
    policy = await world.policy([a], daily=1, weekly=0, monthly=0)
    image = await world.point(a, day(1), policy)
    dump = await world.point(a, day(2), policy, kind="application")
    # A dump whose manifest is committed and whose row is not recorded yet. It started before the
    # latest image backup, but it is newer than every recorded dump: it is not an orphan to judge.
    in_flight = uuid.uuid4()
    world.write_manifest(in_flight, a, day(1) - timedelta(minutes=10), disk_for(in_flight), "application")
    # An older dump without a row, which retention prunes.
    stale = uuid.uuid4()
    world.write_manifest(stale, a, day(3), disk_for(stale), "application")
    # While a guest agent's application backup of the VM is active, none of its orphans go.
    job = backup_job(uuid.uuid4(), world.tenant_id, a, world.ctx.clock.now(), "running")
    job.kind = "app_backup"
    async with world.ctx.sessionmaker.begin() as session:
        session.add(job)
    assert (await pruner(world).prune_all()).orphans_deleted == 0
    assert set(world.repo.list_restore_points()) == ids([image, dump, in_flight, stale])

    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(update(Job).where(Job.id == job.id).values(state="failed"))
    assert (await pruner(world).prune_all()).orphans_deleted == 1
    assert set(world.repo.list_restore_points()) == ids([image, dump, in_flight])


async def test_a_vm_no_policy_protects_any_more_keeps_its_last_policys_retention(world: World) -> None:
    vm, policy, points = await six_days(world)
    other = await world.vm("other")
    others = [await world.point(other, day(i)) for i in range(2)]  # never under a policy
    response = await world.operator.patch(f"/api/v1/policies/{policy}", json={"selection": {"vm_ids": []}})
    assert response.status_code == 200, response.text

    report = await pruner(world).prune_all(policy_id=policy)
    assert report.vms == 1 and report.points_deleted == 3 and report.orphans_deleted == 0
    assert await catalog(world, vm) == ids([points[0], points[1], points[3]])
    assert await catalog(world, other) == ids(others)


async def test_application_points_have_their_own_retention(world: World) -> None:
    """Image points under daily=2/weekly=1, the VM's database dumps under the policy's application
    retention (daily=4): counted apart, so the dumps take no image slot and the other way round."""
    vm = await world.vm("db")
    apps = {
        "retention": {"daily": 4, "weekly": 0, "monthly": 0},
        "items": [{"type": "postgresql", "databases": ["sales"]}],
    }
    policy = await world.policy([vm], applications=apps, daily=2, weekly=1, monthly=0)
    images = [await world.point(vm, day(i), policy) for i in range(6)]
    dumps = [await world.point(vm, day(i) + timedelta(hours=1), policy, kind="application") for i in range(6)]

    result = await pruner(world).prune_vm(vm)
    assert result.plan.keep == {
        images[0]: DAILY,
        images[1]: DAILY,
        images[3]: WEEKLY,
        dumps[0]: DAILY,
        dumps[1]: DAILY,
        dumps[2]: DAILY,
        dumps[3]: DAILY,
    }
    # Oldest first across both kinds.
    assert result.plan.prune == [images[5], dumps[5], images[4], dumps[4], images[2]]
    assert await catalog(world, vm) == ids([*images[:2], images[3], *dumps[:4]])


async def test_a_restore_requested_while_the_prune_runs_keeps_its_point(world: World) -> None:
    """PostgreSQL: the request's insert holds its point's row until it commits; the prune waits
    for it and then sees the new restore (SQLite serialises the two transactions whole)."""
    if world.ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    vm = await world.vm("web")
    point = await world.point(vm, day(3))
    async with world.ctx.sessionmaker.begin() as requesting:
        requesting.add(requested_restore(world, vm, point))
        await requesting.flush()

        async def prune() -> list[uuid.UUID]:
            async with world.ctx.sessionmaker.begin() as session:
                return await RetentionService(session).delete_rows([point])

        pruning = asyncio.create_task(prune())
        await asyncio.sleep(0.5)  # the prune now waits on the point's row
        assert not pruning.done()
    assert await pruning == []
    assert str(point) in await catalog(world, vm)


async def test_onsite_and_offsite_retention_of_one_point_take_turns(world: World) -> None:
    """PostgreSQL: both passes drop a copied point at once. Each decided from an unlocked read of
    'still onsite?', so the row could end up marked both onsite-removed and pruned offsite, with
    no manifest on either side and never selected again. Now the second waits for the first and
    reads what it committed."""
    if world.ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    vm = await world.vm("web")
    point = await world.point(vm, day(3))
    async with world.ctx.sessionmaker.begin() as session:
        copied = update(RestorePoint).where(RestorePoint.id == point).values(copy_status="offsite")
        await session.execute(copied)
    async with world.ctx.sessionmaker.begin() as offsite_pass:
        marked, deleted = await RetentionRepository(offsite_pass).remove_offsite([point])
        assert (marked, deleted) == ([point], [])  # still onsite: its copy is pruned

        async def onsite_pass() -> list[uuid.UUID]:
            async with world.ctx.sessionmaker.begin() as session:
                return await RetentionService(session).delete_rows([point])

        pruning = asyncio.create_task(onsite_pass())
        await asyncio.sleep(0.5)  # the onsite pass now waits on the point's row
        assert not pruning.done()
    # It read the committed 'pruned': no offsite copy any more, so the row itself goes.
    assert await pruning == [point]
    assert str(point) not in await catalog(world, vm)
