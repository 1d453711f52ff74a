"""The periodic inventory refresh, with a clock that the test moves."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from app.clock import ManualClock
from app.context import AppContext
from app.errors import Conflict
from app.scheduler.inventory_refresh import InventoryRefreshLoop
from app.vcenters.models import VCenter
from tests.api.test_vcenters import register
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer
from tests.vadp.reference import closed_port

pytestmark = pytest.mark.vcsim


async def last_syncs(ctx: AppContext) -> dict[str, object]:
    async with ctx.sessionmaker() as session:
        rows = (await session.execute(select(VCenter))).scalars()
        return {vc.name: vc.last_sync_at for vc in rows}


async def test_refresh_syncs_only_what_is_due_and_survives_a_broken_vcenter(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    _, tenant_id = await customer_of("Acme")
    await register(operator, tenant_id, f"http://127.0.0.1:{closed_port()}/sdk", name="broken")
    await register(operator, tenant_id, vcsim.url, name="good")
    loop = InventoryRefreshLoop(ctx.sessionmaker, ctx.syncer, clock, sync_every_s=900, interval_s=30)

    await loop.run_once()
    first = await last_syncs(ctx)
    assert first["good"] == clock.now() and first["broken"] is None
    assert (await operator.get("/api/v1/vms")).json()["total"] > 0
    broken = (await operator.get("/api/v1/vcenters", params={"connection_status": "error"})).json()
    assert [vc["name"] for vc in broken["items"]] == ["broken"]

    clock.advance(timedelta(minutes=10))
    await loop.run_once()
    assert (await last_syncs(ctx))["good"] == first["good"]  # not due yet

    clock.advance(timedelta(minutes=6))
    await loop.run_once()
    assert (await last_syncs(ctx))["good"] == clock.now()


async def test_racing_syncs_of_one_vcenter_run_once(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, vcsim.url)
    syncers = [ctx.syncer for _ in range(3)]
    results = await asyncio.gather(*(s.sync(uuid.UUID(vc["id"])) for s in syncers), return_exceptions=True)
    succeeded = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(succeeded) == 1 and len(refused) == 2, results
    assert succeeded[0].vms.added == (await operator.get("/api/v1/vms")).json()["total"]
    # The claim is released: the next sync runs.
    assert (await ctx.syncer.sync(uuid.UUID(vc["id"]))).vms.added == 0
