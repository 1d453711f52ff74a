"""Onsite and offsite retention apart: a point pruned onsite lives on in its offsite copy (its row
stays, marked not onsite); offsite retention removes copies, and the row goes with the last copy."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from app.chunkstore import FsBackend, Repository
from app.chunkstore.copy import copy_restore_point
from app.clock import ManualClock
from app.policies.models import Policy
from app.restore_points.models import RestorePoint
from app.retention.offsite_loop import OffsiteLoop
from app.retention.onsite import OffsiteRepository, OnsiteRepository
from app.retention.pruner import Pruner
from app.settings import Settings
from tests.retention.conftest import World, berlin_evening


def day(i: int) -> datetime:
    return berlin_evening(datetime(2026, 6, 10) - timedelta(days=i))


async def copied_offsite(
    world: World, tmp_path: Path, onsite_daily: int
) -> tuple[Repository, Settings, uuid.UUID, list[uuid.UUID]]:
    """A VM with six daily points (newest first), all copied to an offsite repository; its policy
    keeps ``onsite_daily`` dailies onsite and 4 offsite. Returns the offsite repository, the
    settings naming it, the VM and the points."""
    offsite_root = tmp_path / "offsite"
    offsite_repo = Repository.create_copy_target(FsBackend(offsite_root, durable=False), world.repo)
    settings = world.ctx.settings.model_copy(update={"offsite_repository": str(offsite_root)})
    vm = await world.vm("db")
    policy = await world.policy([vm], daily=onsite_daily, weekly=0, monthly=0)
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Policy)
            .where(Policy.id == policy)
            .values(offsite_copy=True, offsite_retention={"daily": 4, "weekly": 0, "monthly": 0})
        )
    points = [await world.point(vm, day(i), policy) for i in range(6)]
    for point in points:
        copy_restore_point(world.repo, offsite_repo, str(point))
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(RestorePoint).where(RestorePoint.id.in_(points)).values(copy_status="offsite")
        )
    return offsite_repo, settings, vm, points


async def test_onsite_and_offsite_retention_each_keep_their_own(
    world: World, tmp_path: Path, clock: ManualClock
) -> None:
    offsite_repo, settings, vm, points = await copied_offsite(world, tmp_path, onsite_daily=2)

    # Onsite keeps 2: the other 4 leave the onsite repository, their rows stay (copies exist).
    result = await Pruner(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings)).prune_vm(vm)
    assert sorted(result.manifests_removed) == sorted(str(p) for p in points[2:])
    assert sorted(world.repo.list_restore_points()) == sorted(str(p) for p in points[:2])
    rows = await _rows(world)
    assert set(rows) == set(points)
    assert [rows[p] for p in points] == [(True, "offsite")] * 2 + [(False, "offsite")] * 4

    # Offsite keeps 4: the 2 oldest copies go; both were gone onsite too, so their rows go.
    loop = OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock)
    pruned = await loop.prune()
    assert pruned == 2
    assert sorted(offsite_repo.list_restore_points()) == sorted(str(p) for p in points[:4])
    rows = await _rows(world)
    assert set(rows) == set(points[:4])
    assert await loop.prune() == 0  # idempotent


async def _rows(world: World) -> dict[uuid.UUID, tuple[bool, str]]:
    async with world.ctx.sessionmaker() as session:
        result = await session.execute(
            select(RestorePoint.id, RestorePoint.onsite_removed_at, RestorePoint.copy_status)
        )
        return {pid: (removed is None, status) for pid, removed, status in result.tuples()}


async def test_offsite_manifests_the_catalog_no_longer_wants_are_reconciled(
    world: World, tmp_path: Path, clock: ManualClock
) -> None:
    """Left behind offsite: a copy whose removal was committed (row marked ``pruned``) but whose
    manifest deletion failed, and copies whose rows went (a copy ending after onsite retention
    deleted its row). The daily reconcile removes the first, and those of the second that offsite
    retention would prune; it keeps an orphan retention keeps."""
    offsite_repo, settings, _, points = await copied_offsite(world, tmp_path, onsite_daily=7)
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(RestorePoint).where(RestorePoint.id == points[1]).values(copy_status="pruned")
        )
        await session.execute(delete(RestorePoint).where(RestorePoint.id.in_([points[2], points[5]])))

    loop = OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock)
    assert await loop.prune() == 0  # offsite retention sees 3 copies of 4 allowed
    await loop.tick()
    # Offsite: 0, 3, 4 in the catalog and orphans 2 and 5; keeping 4 dailies keeps 2, not 5.
    assert loop.last_orphans == 2
    assert sorted(offsite_repo.list_restore_points()) == sorted(str(points[i]) for i in (0, 2, 3, 4))
    # Onsite is not touched by the offsite reconcile.
    assert len(world.repo.list_restore_points()) == 6

    # Once a day: a later tick within the day does not list the offsite repository again.
    copy_restore_point(world.repo, offsite_repo, str(points[5]))
    clock.advance(timedelta(hours=1))
    await loop.tick()
    assert str(points[5]) in offsite_repo.list_restore_points()
    # Nor does another replica's loop: one replica lists it per day.
    replica = OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock)
    await replica.tick()
    assert str(points[5]) in offsite_repo.list_restore_points()
    assert replica.reconciled_at == loop.reconciled_at
    clock.advance(timedelta(hours=24))
    await loop.tick()
    assert loop.last_orphans == 1 and str(points[5]) not in offsite_repo.list_restore_points()


async def test_an_onsite_manifest_whose_removal_was_committed_goes_with_the_next_reconcile(
    world: World, tmp_path: Path
) -> None:
    """Onsite retention marked a copied point removed onsite and committed; deleting its manifest
    then failed. Its row stays (it lives on offsite), so it is no orphan: the reconcile removes it
    because its removal was committed, and leaves the points still onsite alone."""
    _, _, _, points = await copied_offsite(world, tmp_path, onsite_daily=7)
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(RestorePoint).where(RestorePoint.id == points[3]).values(onsite_removed_at=day(0))
        )
    pruner = Pruner(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings))
    assert await pruner.reconcile() == 1
    assert sorted(world.repo.list_restore_points()) == sorted(str(p) for i, p in enumerate(points) if i != 3)
    assert set(await _rows(world)) == set(points)  # every row stays
    assert await pruner.reconcile() == 0


async def test_a_failed_reconcile_is_tried_again_by_the_next_tick_of_any_replica(
    world: World, tmp_path: Path, clock: ManualClock
) -> None:
    """The reconcile's claim is given back when it fails (the offsite store down): the next tick,
    here another replica's, lists the repository instead of everyone waiting a day."""
    offsite_repo, settings, _, points = await copied_offsite(world, tmp_path, onsite_daily=7)
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(delete(RestorePoint).where(RestorePoint.id == points[5]))
    failing = OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock)

    async def store_down() -> int:
        raise OSError("offsite store unreachable")

    failing.reconcile = store_down  # type: ignore[method-assign]
    with pytest.raises(OSError, match="unreachable"):
        await failing.tick()
    replica = OffsiteLoop(world.ctx.sessionmaker, OffsiteRepository(settings), clock)
    await replica.tick()
    assert replica.last_orphans == 1 and str(points[5]) not in offsite_repo.list_restore_points()
