"""Restore archives expire: the export leaves the repository, the restore says so, downloads stop."""

from __future__ import annotations

import os
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import update

from app.chunkstore import ExportNotFound, open_stream_backup
from app.clock import ManualClock
from app.jobs.job_params import export_id_for
from app.jobs.models import Job
from app.restores.models import Restore
from app.retention.archives import ArchiveExpiryLoop
from app.retention.onsite import OnsiteRepository
from tests.retention.conftest import World


def write_export(world: World, export_id: str) -> None:
    writer = world.repo.begin_export(export_id)
    with open_stream_backup(writer, "archive.tar") as stream:
        stream.write(os.urandom(70_000))
        stream.finish()
    writer.commit()


async def archive_restore(
    world: World, completed_ago: timedelta, state: str = "succeeded", attempts: int = 1
) -> tuple[uuid.UUID, str]:
    """A file restore delivered as an archive, whose ``attempts`` each committed an export (an
    attempt that lost its lease may have); the last attempt's is the restore's."""
    vm = await world.vm(f"vm-{uuid.uuid4().hex[:6]}")
    point = await world.point(vm, world.ctx.clock.now() - timedelta(days=1))
    restore_id = await world.restore(point, vm, state)
    for attempt in range(1, attempts + 1):
        write_export(world, export_id_for(restore_id, attempt))
    export_id = export_id_for(restore_id, attempts)
    now = world.ctx.clock.now()
    async with world.ctx.sessionmaker.begin() as session:
        session.add(
            Job(
                id=uuid.uuid4(),
                tenant_id=world.tenant_id,
                vm_id=vm,
                restore_id=restore_id,
                kind="file_restore",
                state=state,
                trigger="restore",
                priority=0,
                attempt=attempts,
                max_attempts=3,
                created_at=now,
                not_before=now,
                params={},
            )
        )
        await session.execute(
            update(Restore)
            .where(Restore.id == restore_id)
            .values(
                type="files",
                target="archive",
                target_params={"delivery": "archive", "archive_format": "tar", "files": []},
                completed_at=now - completed_ago,
                result={"delivery": "archive", "export_id": export_id, "files": 1, "bytes": 70_000}
                if state == "succeeded"
                else {},
            )
        )
    return restore_id, export_id


async def test_archives_are_removed_after_their_keep_time_and_the_restore_says_so(
    world: World, clock: ManualClock
) -> None:
    old_id, old_export = await archive_restore(world, timedelta(days=8))
    new_id, new_export = await archive_restore(world, timedelta(days=1))
    loop = ArchiveExpiryLoop(
        world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock, keep=timedelta(days=7)
    )
    await loop.run_once()
    assert loop.last_expired == 1
    with pytest.raises(ExportNotFound):
        world.repo.read_export(old_export)
    assert world.repo.read_export(new_export).id == new_export

    expired = (await world.operator.get(f"/api/v1/restores/{old_id}")).json()
    assert expired["result"]["archive_expired"] is True and expired["download_url"] is None
    gone = await world.operator.get(f"/api/v1/restores/{old_id}/archive")
    assert gone.status_code == 409 and "expired" in gone.json()["detail"]
    kept = (await world.operator.get(f"/api/v1/restores/{new_id}")).json()
    assert kept["download_url"] == f"/api/v1/restores/{new_id}/archive"

    await loop.run_once()  # idempotent
    assert loop.last_expired == 0


async def test_every_attempts_archive_goes_and_those_of_failed_restores_too(
    world: World, clock: ManualClock
) -> None:
    """Each attempt writes its own export, and GC counts exports as live: none may stay behind."""
    retried_id, _ = await archive_restore(world, timedelta(days=8), attempts=2)
    failed_id, _ = await archive_restore(world, timedelta(days=8), state="failed", attempts=1)
    loop = ArchiveExpiryLoop(
        world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock, keep=timedelta(days=7)
    )
    await loop.run_once()
    for export_id in (
        export_id_for(retried_id, 1),
        export_id_for(retried_id, 2),
        export_id_for(failed_id, 1),
    ):
        with pytest.raises(ExportNotFound):
            world.repo.read_export(export_id)
    assert loop.last_expired == 2
    await loop.run_once()
    assert loop.last_expired == 0
