"""Garbage collection: the grace period protects a running backup; the loop; the command."""

from __future__ import annotations

import os
import random
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from app.chunkstore import (
    ChunkMissing,
    DiskIndex,
    FsBackend,
    GcReport,
    Repository,
    backup_disk,
    gc,
    iter_disk,
)
from app.cli import cli
from app.clock import ManualClock
from app.jobs.models import Job
from app.retention.loop import GcLoop
from app.retention.onsite import OnsiteRepository
from app.retention.repository import OFFSITE_WRITING_KINDS, ONSITE_WRITING_KINDS
from tests.retention.conftest import CHUNK, BytesReader, World, backup_job

DATA = random.Random(3).randbytes(8 * CHUNK)


def half_written_backup(root: Path) -> tuple[Repository, DiskIndex]:
    """A backup caught mid-way: every chunk stored, its index and manifest not written yet."""
    repo = Repository.create(FsBackend(root, durable=False), chunk_size=CHUNK)
    result = backup_disk(repo, BytesReader(DATA), len(DATA), workers=1)
    assert len(list(repo.chunk_ids())) == 8
    return repo, result.index


def finish(repo: Repository, index: DiskIndex) -> bytes:
    writer = repo.begin_restore_point("rp-1", vm_config={})
    writer.add_disk(key="2000", label="Hard disk 1", index=index)
    point = writer.commit()
    return b"".join(iter_disk(repo, repo.read_index(point.disks[0]), workers=1))


def test_the_grace_period_is_what_protects_a_running_backup(tmp_path: Path) -> None:
    repo, index = half_written_backup(tmp_path / "with-grace")
    report = gc(repo)  # the default grace, 24 hours
    assert report.chunks_deleted == 0 and report.chunks_kept_young == 8
    assert finish(repo, index) == DATA

    repo, index = half_written_backup(tmp_path / "no-grace")
    report = gc(repo, timedelta(0))
    assert report.chunks_deleted == 8  # nothing references them yet: swept
    with pytest.raises(ChunkMissing):
        finish(repo, index)


async def test_gc_loop_waits_for_running_backups_but_not_forever(world: World) -> None:
    clock = world.ctx.clock
    assert isinstance(clock, ManualClock)
    vm = await world.vm("web")
    old, new = await world.point(vm, clock.now() - timedelta(days=1)), await world.point(vm, clock.now())
    world.repo.delete_restore_point(str(old))  # as a prune does: its own 3 chunks are garbage now
    job_id = uuid.uuid4()
    async with world.ctx.sessionmaker.begin() as session:
        session.add(backup_job(job_id, world.tenant_id, vm, clock.now(), "running"))
    loop = GcLoop(
        world.ctx.sessionmaker,
        OnsiteRepository(world.ctx.settings),
        clock,
        grace=timedelta(0),
        every=timedelta(hours=24),
    )

    await loop.run_once()
    assert loop.deferred == 1 and loop.last_report is None  # a backup runs: GC waits
    clock.advance(timedelta(hours=25))
    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=clock.now() + timedelta(minutes=5))
        )
    await loop.run_once()  # still running, but GC has waited a whole interval: it runs
    assert loop.last_report is not None and loop.last_report.chunks_deleted == 3
    assert world.restored(new)

    clock.advance(timedelta(hours=1))
    await loop.run_once()
    assert loop.last_report.chunks_deleted == 3  # not due again for a day
    assert loop.last_gc_at == clock.now() - timedelta(hours=1)


class _FailsOnce(OnsiteRepository):
    """The real onsite repository, whose first collection fails (a disk gone, S3 answering 503)."""

    failed = False

    async def gc(self, grace: timedelta, *, dry_run: bool = False) -> GcReport:
        if not self.failed:
            self.failed = True
            raise OSError("the repository's disk went away")
        return await super().gc(grace, dry_run=dry_run)


async def test_one_replica_collects_each_period(world: World) -> None:
    """Every replica runs a GC loop; one collects the repository per period, the others wait a
    period from its start (they would read every manifest and list every chunk again). A replica
    that starts while backups run learns of the collection instead of waiting for its own. A
    collection that fails gives its claim back: the next tick of any replica tries again."""
    clock = world.ctx.clock
    assert isinstance(clock, ManualClock)
    first = GcLoop(world.ctx.sessionmaker, _FailsOnce(world.ctx.settings), clock, grace=timedelta(0))
    second = GcLoop(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock, grace=timedelta(0))
    with pytest.raises(OSError, match="disk went away"):
        await first.tick()
    await second.tick()
    assert second.last_report is not None and second.last_gc_at == clock.now()

    clock.advance(timedelta(minutes=5))
    vm = await world.vm("web")
    async with world.ctx.sessionmaker.begin() as session:  # a backup runs from now on
        session.add(backup_job(uuid.uuid4(), world.tenant_id, vm, clock.now(), "running"))
    late = GcLoop(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock, grace=timedelta(0))
    await late.tick()  # a replica started now: collected minutes ago, nothing to wait for
    assert late.deferred == 0 and late.last_report is None
    assert late.last_gc_at == second.last_gc_at
    await first.tick()
    assert first.last_report is None and first.last_gc_at == second.last_gc_at

    async with world.ctx.sessionmaker.begin() as session:
        await session.execute(update(Job).values(state="succeeded"))
    clock.advance(timedelta(hours=24))
    await first.tick()
    await second.tick()
    assert first.last_report is not None  # the first to tick once it is due collects
    assert second.last_report is not None and second.last_gc_at == first.last_gc_at == clock.now()


def test_gc_command_reports_bytes_freed(tmp_path: Path) -> None:
    root = tmp_path / "var" / "repository"
    root.mkdir(parents=True)
    repo = Repository.create(FsBackend(root, durable=False), chunk_size=CHUNK)
    backup_disk(repo, BytesReader(DATA), len(DATA), workers=1)  # chunks no manifest references
    two_days_ago = time.time() - 2 * 86400
    for chunk_id in list(repo.chunk_ids())[:5]:
        os.utime(root / "chunks" / chunk_id.hex()[:2] / chunk_id.hex(), (two_days_ago, two_days_ago))
    stored = sum(p.stat().st_size for p in (root / "chunks").rglob("*") if p.is_file())
    env = {"VMR_DATA_DIR": str(tmp_path / "var"), "VMR_LOG_LEVEL": "warning"}
    runner = CliRunner()

    dry = runner.invoke(cli, ["repository", "gc", "--dry-run"], env=env)
    assert dry.exit_code == 0, dry.output
    assert "would free 5 chunks" in dry.output and "kept 3 unreferenced chunks" in dry.output
    done = runner.invoke(cli, ["repository", "gc"], env=env)
    assert done.exit_code == 0, done.output
    assert "freed 5 chunks" in done.output and "kept 3 unreferenced chunks younger than 1 day" in done.output
    left = sum(p.stat().st_size for p in (root / "chunks").rglob("*") if p.is_file())
    assert f"{stored - left} bytes" in done.output
    everything = runner.invoke(cli, ["repository", "gc", "--grace-hours", "0"], env=env)
    assert "freed 3 chunks" in everything.output and "warning" in everything.output


async def test_loops_wait_quietly_for_an_unmigrated_catalog(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.db.engine import create_engine, create_sessionmaker
    from app.retention.loop import RetentionLoop
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path)
    Repository.create(FsBackend(settings.resolved_repository_path, durable=False), chunk_size=CHUNK)
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        onsite, clock = OnsiteRepository(settings), ManualClock()
        sessionmaker = create_sessionmaker(engine)
        for loop in (GcLoop(sessionmaker, onsite, clock), RetentionLoop(sessionmaker, onsite, clock)):
            await loop.run_once()
    finally:
        await engine.dispose()
    waiting = [r for r in caplog.records if "waits for the catalog to be migrated" in r.getMessage()]
    assert len(waiting) == 2 and all(r.exc_info is None for r in waiting)


@pytest.mark.parametrize(
    ("writers", "kind", "waits"),
    [
        (ONSITE_WRITING_KINDS, "app_backup", True),  # a guest agent's dumps
        (ONSITE_WRITING_KINDS, "file_restore", True),  # an archive of restored files
        (ONSITE_WRITING_KINDS, "offsite_copy", False),  # writes to the other repository
        (OFFSITE_WRITING_KINDS, "offsite_copy", True),
        (OFFSITE_WRITING_KINDS, "backup", False),
    ],
)
async def test_each_collection_waits_for_the_jobs_that_write_into_its_repository(
    world: World, writers: tuple[str, ...], kind: str, waits: bool
) -> None:
    clock = world.ctx.clock
    assert isinstance(clock, ManualClock)
    vm = await world.vm("web")
    job = backup_job(uuid.uuid4(), world.tenant_id, vm, clock.now(), "running")
    job.kind = kind
    async with world.ctx.sessionmaker.begin() as session:
        session.add(job)
    loop = GcLoop(world.ctx.sessionmaker, OnsiteRepository(world.ctx.settings), clock, writers=writers)
    await loop.run_once()
    assert (loop.deferred == 1) is waits
    assert (loop.last_report is None) is waits
