"""Restore SLA clocks through the API, and what the SLA recorder records."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from app.clock import ManualClock
from app.compliance.models import RestoreSla
from app.context import AppContext
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from tests.compliance.helpers import add_point, hours, protected_vm, sla_recorder, table_rows
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

SLA = "/api/v1/compliance/restores"


async def request_restore(client: httpx.AsyncClient, point_id: uuid.UUID, vm: dict[str, Any]) -> str:
    response = await client.post(
        "/api/v1/restores",
        json={
            "restore_point_id": str(point_id),
            "target": "new",
            "new_vm": {
                "name": f"copy-{uuid.uuid4().hex[:6]}",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def set_restore(ctx: AppContext, restore_id: str, **values: object) -> None:
    async with ctx.sessionmaker.begin() as session:
        await session.execute(update(Restore).where(Restore.id == uuid.UUID(restore_id)).values(**values))


async def clocks(client: httpx.AsyncClient, restore_id: str) -> tuple[str, str]:
    response = await client.get(f"{SLA}/{restore_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    return body["initiation"]["status"], body["completion"]["status"]


async def test_initiation_and_completion_clocks_onsite_offsite_and_rto_from_the_policy(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    customer, _, vm, _ = await protected_vm(operator, customer_of, vcsim, rto_hours=4)
    point = await add_point(ctx, vm["id"])
    t0 = clock.now()
    onsite = await request_restore(customer, point, vm)
    offsite = await request_restore(customer, point, vm)
    await set_restore(ctx, offsite, source_location="offsite")
    body = (await customer.get(f"{SLA}/{onsite}")).json()
    assert body["rto_hours"] == 4 and body["initiation_window_hours"] == 2.0
    assert body["initiation"]["deadline_at"] == (t0 + hours(2)).isoformat().replace("+00:00", "Z")
    assert body["completion"]["deadline_at"] == (t0 + hours(4)).isoformat().replace("+00:00", "Z")

    clock.set(t0 + timedelta(minutes=95))
    assert await clocks(customer, onsite) == ("on_track", "on_track")
    clock.set(t0 + timedelta(minutes=96))  # 80% of 2 h
    assert await clocks(customer, onsite) == ("at_risk", "on_track")
    clock.set(t0 + hours(2) + timedelta(seconds=1))
    assert await clocks(customer, onsite) == ("breached", "on_track")
    assert await clocks(customer, offsite) == ("on_track", "on_track")
    # Completion (the policy's RTO, 4 h) is at risk from 3.2 h; offsite initiation from 4.8 h.
    clock.set(t0 + hours(3.2))
    assert await clocks(customer, onsite) == ("breached", "at_risk")
    assert await clocks(customer, offsite) == ("on_track", "at_risk")
    clock.set(t0 + hours(4.8))
    assert await clocks(customer, offsite) == ("at_risk", "breached")
    await set_restore(ctx, offsite, initiated_at=clock.now(), state="running")
    clock.set(t0 + hours(5))
    assert await clocks(customer, offsite) == ("met", "breached")
    body = (await customer.get(f"{SLA}/{offsite}")).json()
    assert body["initiation"]["at_risk_at"] is not None and body["initiation"]["breached_at"] is None
    assert body["completion"]["breached_at"] == body["completion"]["deadline_at"]

    listed = (await customer.get(SLA, params={"status": "breached"})).json()
    assert {r["restore_id"] for r in listed["items"]} == {onsite, offsite}
    assert (await customer.get(SLA, params={"status": "on_track"})).json()["total"] == 0
    summary = (await customer.get("/api/v1/compliance/summary")).json()["restores"]
    assert summary["restores"] == 2 and summary["active_breached"] == 2
    assert summary["initiation"]["breached"] == 1 and summary["initiation"]["met"] == 1


async def test_default_rto_without_a_policy_and_the_recorder(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    customer, _, vm, _ = await protected_vm(operator, customer_of, vcsim)
    point = await add_point(ctx, vm["id"])
    async with ctx.sessionmaker.begin() as session:
        await session.execute(update(RestorePoint).where(RestorePoint.id == point).values(policy_id=None))
    t0 = clock.now()
    restore = await request_restore(customer, point, vm)
    assert (await customer.get(f"{SLA}/{restore}")).json()["rto_hours"] == 12
    recorder = sla_recorder(ctx)

    await recorder.run_once()
    rows = await table_rows(ctx)
    assert len(rows["restore_slas"]) == 1
    await recorder.run_once()
    assert await table_rows(ctx) == rows and recorder.last_changed == 0  # nothing new: no writes

    clock.set(t0 + hours(1.6))
    await set_restore(ctx, restore, initiated_at=t0 + hours(1.7), state="running")
    clock.set(t0 + hours(9.7))
    await recorder.run_once()
    sla = await recorded(ctx, restore)
    assert sla.initiation_status == "met" and sla.initiation_at_risk_at == t0 + timedelta(minutes=96)
    assert sla.completion_status == "at_risk" and sla.completion_at_risk_at == t0 + hours(9.6)
    assert not sla.settled
    await set_restore(ctx, restore, completed_at=t0 + hours(11), state="succeeded")
    clock.set(t0 + hours(20))
    await recorder.run_once()
    sla = await recorded(ctx, restore)
    assert (sla.completion_status, sla.completion_breached_at, sla.settled) == ("met", None, True)
    body = (await customer.get(f"{SLA}/{restore}")).json()
    assert body["recorded_at"] is not None and body["completion"]["status"] == "met"
    # Settled clocks are not looked at again.
    before = await table_rows(ctx)
    clock.set(t0 + hours(100))
    await recorder.run_once()
    assert await table_rows(ctx) == before

    # Its point pruned since (retention nulls the restore's point id): the restore stays in the
    # report, with the RTO its clocks were recorded with.
    await set_restore(ctx, restore, restore_point_id=None)
    body = (await customer.get(f"{SLA}/{restore}")).json()
    assert body["rto_hours"] == 12 and body["completion"]["status"] == "met"
    listed = (await customer.get(SLA)).json()
    assert [r["restore_id"] for r in listed["items"]] == [restore]


async def recorded(ctx: AppContext, restore_id: str) -> RestoreSla:
    async with ctx.sessionmaker() as session:
        return (
            await session.execute(select(RestoreSla).where(RestoreSla.restore_id == uuid.UUID(restore_id)))
        ).scalar_one()
