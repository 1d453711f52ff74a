"""Restores over an existing VM wait for an operator unless the tenant waives it; the wait counts
against the SLA clocks (they run from the request)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from app.context import AppContext
from tests.api.test_inventory import all_items
from tests.api.test_isolation import record_restore_point
from tests.api.test_policies import synced_tenant
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim


async def a_point(ctx: AppContext, operator: httpx.AsyncClient, vm: dict[str, Any]) -> str:
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()[0]
    return str(await record_restore_point(ctx, uuid.UUID(job["id"])))


async def test_over_the_original_waits_for_an_operator_then_runs(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    point = await a_point(ctx, operator, vms[0])
    tenant = (await operator.get(f"/api/v1/tenants/{tenant_id}")).json()
    assert tenant["restore_approval_required"] is True  # the default

    asked = await customer.post(
        "/api/v1/restores", json={"restore_point_id": point, "target": "original", "force": True}
    )
    assert asked.status_code == 202, asked.text
    restore = asked.json()
    assert restore["state"] == "awaiting_approval" and restore["approval_required"] is True
    assert restore["job_id"] is None
    assert await all_items(operator, "/api/v1/jobs", kind="restore") == []
    again = await customer.post(
        "/api/v1/restores", json={"restore_point_id": point, "target": "original", "force": True}
    )
    assert again.status_code == 409  # one restore of a VM at a time, waiting ones included

    assert (await customer.post(f"/api/v1/restores/{restore['id']}/approve")).status_code == 403
    clock.advance(timedelta(minutes=40))
    approved = await operator.post(f"/api/v1/restores/{restore['id']}/approve")
    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert body["state"] == "requested" and body["job_id"] is not None
    assert body["requested_at"] == restore["requested_at"]  # the clocks ran through the wait
    assert body["decided_at"] is not None
    (job,) = await all_items(operator, "/api/v1/jobs", kind="restore")
    assert job["state"] == "queued" and job["restore_id"] == restore["id"]
    assert (await operator.post(f"/api/v1/restores/{restore['id']}/approve")).status_code == 409


async def test_rejected_with_a_reason_and_waived_per_tenant(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    point = await a_point(ctx, operator, vms[0])
    original = {"restore_point_id": point, "target": "original", "force": True}
    restore = (await customer.post("/api/v1/restores", json=original)).json()
    rejected = await operator.post(
        f"/api/v1/restores/{restore['id']}/reject", json={"reason": "change freeze"}
    )
    assert rejected.status_code == 200
    assert rejected.json()["state"] == "cancelled" and "change freeze" in rejected.json()["error"]
    assert (
        await operator.post(f"/api/v1/restores/{restore['id']}/reject", json={"reason": "x"})
    ).status_code == 409

    # A restore as a new VM never waits.
    host = (await operator.get("/api/v1/hosts", params={"tenant_id": str(tenant_id)})).json()["items"][0]
    new_vm = {"name": "copy", "host_id": host["id"], "datastore_id": vms[0]["datastores"][0]["id"]}
    as_new = await customer.post(
        "/api/v1/restores", json={"restore_point_id": point, "target": "new", "new_vm": new_vm}
    )
    assert as_new.json()["state"] == "requested" and as_new.json()["approval_required"] is False

    # The operator waives approvals for this tenant: restores over the original start at once.
    waived = await operator.patch(f"/api/v1/tenants/{tenant_id}", json={"restore_approval_required": False})
    assert waived.status_code == 200 and waived.json()["restore_approval_required"] is False
    assert (
        await customer.patch(f"/api/v1/tenants/{tenant_id}", json={"restore_approval_required": True})
    ).status_code in (403, 404)
    point2 = await a_point(ctx, operator, vms[1])
    direct = (await customer.post("/api/v1/restores", json={**original, "restore_point_id": point2})).json()
    assert direct["state"] == "requested" and direct["job_id"] is not None


async def test_cancelling_a_restores_queued_job_ends_the_restore(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, _, vms = await synced_tenant(operator, customer_of, vcsim)
    point = await a_point(ctx, operator, vms[0])
    new_vm = {"name": "copy", "host_id": vms[0]["host"]["id"], "datastore_id": vms[0]["datastores"][0]["id"]}
    body = {"restore_point_id": point, "target": "new", "new_vm": new_vm}
    asked = await customer.post("/api/v1/restores", json=body)
    assert asked.status_code == 202, asked.text
    restore = asked.json()
    assert restore["state"] == "requested" and restore["job_id"] is not None

    cancelled = await operator.post(f"/api/v1/jobs/{restore['job_id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    ended = (await customer.get(f"/api/v1/restores/{restore['id']}")).json()
    assert ended["state"] == "cancelled" and ended["completed_at"] is not None
    assert "cancelled" in ended["error"]
    # The VM is free for the next restore.
    again = await customer.post("/api/v1/restores", json=body)
    assert again.status_code == 202, again.text


async def test_two_operators_deciding_at_once_take_turns(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, _, vms = await synced_tenant(operator, customer_of, vcsim)
    point = await a_point(ctx, operator, vms[0])
    original = {"restore_point_id": point, "target": "original", "force": True}
    for rival in ("approve", "reject"):
        restore = (await customer.post("/api/v1/restores", json=original)).json()
        first, second = await asyncio.gather(
            operator.post(f"/api/v1/restores/{restore['id']}/approve"),
            operator.post(f"/api/v1/restores/{restore['id']}/{rival}", json={"reason": "change freeze"}),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        final = (await operator.get(f"/api/v1/restores/{restore['id']}")).json()
        jobs = [
            j
            for j in await all_items(operator, "/api/v1/jobs", kind="restore")
            if j["restore_id"] == restore["id"]
        ]
        assert len(jobs) == (1 if final["state"] == "requested" else 0)
        if jobs:  # let the VM take the next restore
            assert (await operator.post(f"/api/v1/jobs/{jobs[0]['id']}/cancel")).status_code == 200
