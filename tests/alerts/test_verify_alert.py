"""``vmrecovery repository verify`` records its outcome as the verify alert (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import select

from app.alerts.models import Alert
from app.alerts.service import AlertService
from app.chunkstore import FsBackend, Repository, open_stream_backup
from app.context import AppContext
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade_to_head

VMRECOVERY = str(Path(sys.executable).with_name("vmrecovery"))


async def test_damage_opens_the_verify_alert_and_a_clean_run_closes_it(
    ctx: AppContext, operator: httpx.AsyncClient
) -> None:
    summary = {"chunks_damaged": 2, "chunks_missing": 1, "restore_points_affected": ["rp-1", "rp-2"]}
    for _ in range(2):
        async with ctx.sessionmaker.begin() as session:
            await AlertService(session).record_verify(ctx.clock.now(), True, summary)
    (alert,) = (await operator.get("/api/v1/alerts", params={"kind": "verify_damage"})).json()["items"]
    assert alert["key"] == "verify_damage:onsite" and alert["severity"] == "critical"
    assert alert["message"].startswith(
        "Repository verify found 2 damaged and 1 missing chunks; 2 restore point"
    )
    assert alert["detail"] == summary and alert["tenant_id"] is None
    async with ctx.sessionmaker.begin() as session:
        await AlertService(session).record_verify(ctx.clock.now(), False, {})
    assert (await operator.get("/api/v1/alerts", params={"kind": "verify_damage"})).json()["total"] == 0


def run_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VMR_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [VMRECOVERY, "repository", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def open_verify_alerts(url: str) -> list[Alert]:
    engine = create_engine(url)
    try:
        async with create_sessionmaker(engine)() as session:
            stmt = select(Alert).where(Alert.kind == "verify_damage", Alert.closed_at.is_(None))
            return list((await session.execute(stmt)).scalars())
    finally:
        await engine.dispose()


async def test_the_command_records_its_outcome_in_the_catalog(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'catalog.db'}"
    with ThreadPoolExecutor(1) as pool:  # alembic runs an event loop of its own
        pool.submit(upgrade_to_head, url).result()
    repo = Repository.create(FsBackend(tmp_path / "repository", durable=False), chunk_size=64 * 1024)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with open_stream_backup(writer, "postgresql/sales") as stream:
        stream.write(os.urandom(200_000))
        stream.finish()
    writer.commit()
    chunk = next(iter(repo.chunk_ids()))
    path = tmp_path / "repository" / "chunks" / chunk.hex()[:2] / chunk.hex()
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))

    damaged = run_verify(tmp_path)
    assert damaged.returncode == 1 and "DAMAGE FOUND" in damaged.stdout
    (alert,) = await open_verify_alerts(url)
    assert alert.detail["restore_points_affected"] == ["rp-1"] and alert.detail["chunks_damaged"] == 1

    path.write_bytes(good)
    clean = run_verify(tmp_path)
    assert clean.returncode == 0 and clean.stderr == ""
    assert await open_verify_alerts(url) == []

    os.remove(tmp_path / "catalog.db")
    without_catalog = run_verify(tmp_path)
    assert without_catalog.returncode == 0 and "the outcome is not recorded" in without_catalog.stderr
    assert not (tmp_path / "catalog.db").exists()
