"""Guest agents: one per VM, tenant-owned, on the agent channel for their own VM's application jobs."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from app.context import AppContext
from app.scheduler.dispatch_watch import DispatchWatchLoop
from app.scheduler.planner import PlannerLoop
from tests.api.test_inventory import all_items
from tests.api.test_jobs import claim
from tests.api.test_policies import create_policy, synced_tenant
from tests.api.test_proxies import BEAT, register_proxy
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

MONDAY_2100 = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)
APPS = {
    "schedule": {"type": "weekly", "times": ["23:00"]},
    "window": {"start": "23:00", "duration_minutes": 120},
    "retention": {"daily": 3, "weekly": 0, "monthly": 0},
    "items": [
        {"type": "postgresql", "databases": ["sales"]},
        {"type": "files", "paths": ["/etc"]},
    ],
}


async def register_guest(client: httpx.AsyncClient, vm_id: str) -> dict[str, Any]:
    response = await client.post("/api/v1/guest-agents", json={"vm_id": vm_id})
    assert response.status_code == 201, response.text
    return response.json()


async def test_customer_registers_one_agent_per_vm_of_its_own(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    agent = await register_guest(customer, vms[0]["id"])
    assert agent["token"].startswith("vmrg_") and agent["vm_id"] == vms[0]["id"]
    assert agent["tenant_id"] == str(tenant_id) and agent["status"] == "offline"
    again = await customer.post("/api/v1/guest-agents", json={"vm_id": vms[0]["id"]})
    assert again.status_code == 409 and "already has a guest agent" in again.json()["detail"]

    other, _, other_vms = await synced_tenant(operator, customer_of, vcsim, "Other")
    foreign = await customer.post("/api/v1/guest-agents", json={"vm_id": other_vms[0]["id"]})
    assert foreign.status_code == 422  # another tenant's VM does not exist for this customer
    assert (await other.get(f"/api/v1/guest-agents/{agent['id']}")).status_code == 404

    # Guest agents are not proxies: they do not appear among them, nor count as serving hosts.
    assert agent["id"] not in {p["id"] for p in await all_items(operator, "/api/v1/proxies")}
    assert (await operator.get(f"/api/v1/proxies/{agent['id']}")).status_code == 404

    guest = make_client(agent["token"])
    beat = {
        **BEAT,
        "applications": [{"engine": "postgresql", "version": "15.19", "databases": ["sales", "hr"]}],
    }
    ack = await guest.post("/api/v1/agent/heartbeat", json=beat)
    assert ack.status_code == 200, ack.text
    assert ack.json()["kind"] == "guest" and ack.json()["vm_id"] == vms[0]["id"] and ack.json()["hosts"] == []
    shown = (await customer.get(f"/api/v1/guest-agents/{agent['id']}")).json()
    assert shown["status"] == "online" and shown["applications"][0]["databases"] == ["sales", "hr"]
    for path in ("/api/v1/vms", "/api/v1/guest-agents"):
        assert (await guest.get(path)).status_code == 401  # an agent token is not an API key

    rotated = await customer.post(f"/api/v1/guest-agents/{agent['id']}/token")
    assert rotated.status_code == 200
    assert (await guest.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 401
    assert (await customer.delete(f"/api/v1/guest-agents/{agent['id']}")).status_code == 204
    assert (
        await make_client(rotated.json()["token"]).post("/api/v1/agent/heartbeat", json=BEAT)
    ).status_code == 401


async def test_application_jobs_are_planned_on_their_own_schedule_and_only_the_vms_agent_takes_them(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    clock.set(MONDAY_2100)
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    policy = await create_policy(
        operator,
        tenant_id,
        name="db",
        selection={"vm_ids": [vms[0]["id"], vms[1]["id"]]},
        schedule={"type": "weekly", "times": ["22:00"]},
        window={"start": "22:00", "duration_minutes": 180},  # still open at 23:01, when claimed
        applications=APPS,
    )
    assert policy["applications"]["items"][0] == {
        "type": "postgresql",
        "instance": "default",
        "databases": ["sales"],
    }
    guest = make_client((await register_guest(customer, vms[0]["id"]))["token"])
    host = (await operator.get("/api/v1/hosts")).json()["items"]
    proxy = make_client((await register_proxy(operator, "all", [h["id"] for h in host]))["token"])
    await proxy.post("/api/v1/agent/heartbeat", json=BEAT)
    await guest.post("/api/v1/agent/heartbeat", json=BEAT)
    planner = PlannerLoop(ctx.sessionmaker, clock)

    clock.set(MONDAY_2100 + timedelta(hours=1, minutes=1))  # 22:01: the image slot only
    await planner.run_once()
    jobs = await all_items(operator, "/api/v1/jobs")
    assert {j["kind"] for j in jobs} == {"backup"} and len(jobs) == 2
    clock.set(MONDAY_2100 + timedelta(hours=2, minutes=1))  # 23:01: the application slot
    await planner.run_once()
    await planner.run_once()
    app_jobs = await all_items(operator, "/api/v1/jobs", kind="app_backup")
    assert sorted(j["vm_id"] for j in app_jobs) == sorted([vms[0]["id"], vms[1]["id"]])

    # The VM without an agent says why its application job waits.
    await guest.post("/api/v1/agent/heartbeat", json=BEAT)
    await proxy.post("/api/v1/agent/heartbeat", json=BEAT)
    await DispatchWatchLoop(ctx.sessionmaker, clock, stale_after_s=90).run_once()
    waiting = {
        j["vm_id"]: j["waiting_reason"] for j in await all_items(operator, "/api/v1/jobs", kind="app_backup")
    }
    assert waiting[vms[0]["id"]] is None
    assert "no guest agent in VM" in waiting[vms[1]["id"]]

    # The proxy takes image backups only; the guest agent its own VM's application job only.
    taken = await claim(proxy)
    assert taken and {j["kind"] for j in taken} == {"backup"}
    mine = await claim(guest)
    assert [j["kind"] for j in mine] == ["app_backup"] and mine[0]["vm"]["id"] == vms[0]["id"]
    assert mine[0]["vcenter"] is None  # vCenter credentials never go into a customer's VM
    params = mine[0]["app_backup"]
    assert [i["type"] for i in params["items"]] == ["postgresql", "files"]
    assert params["previous_restore_point_id"] is None
    assert await claim(guest) == []

    # A guest agent's token is the customer's: its report is input like any other. A naive or
    # out-of-range time, or sizes whose sum no column holds, are 422 and the job runs on.
    url = f"/api/v1/agent/jobs/{mine[0]['job_id']}/complete"
    stream = {"name": "postgresql/sales", "engine": "postgresql", "size": 2**52}
    for created_at, streams in (
        ("2026-01-05T23:05:00", [stream]),
        ("0001-01-01T00:00:00+01:00", [stream]),
        ("2026-01-05T23:05:00Z", [stream] * 2),
    ):
        report = {
            "restore_point_id": params["restore_point_id"],
            "created_at": created_at,
            "streams": streams,
        }
        refused = await guest.post(url, json={"outcome": "succeeded", "app_backup": report})
        assert refused.status_code == 422, refused.text
    job = (await operator.get(f"/api/v1/jobs/{mine[0]['job_id']}")).json()
    assert job["state"] == "running"


async def test_quiesce_is_asked_by_the_proxy_frozen_by_the_guest_and_released(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    await create_policy(
        operator, tenant_id, name="aware", selection={"vm_ids": [vms[0]["id"]]}, application_aware=True
    )
    guest = make_client((await register_guest(customer, vms[0]["id"]))["token"])
    hosts = (await operator.get("/api/v1/hosts")).json()["items"]
    proxy = make_client((await register_proxy(operator, "all", [h["id"] for h in hosts]))["token"])
    assert (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).status_code == 201
    [backup] = await claim(proxy)
    assert backup["backup"]["quiesce"] is True
    assert backup["backup"]["guest"]["quiesce"]["freeze_timeout_s"] > 0
    base = f"/api/v1/agent/jobs/{backup['job_id']}/quiesce"

    asked = await proxy.post(base)
    assert asked.status_code == 200, asked.text
    assert asked.json()["state"] == "queued" and asked.json()["frozen"] is False
    assert (await proxy.post(base)).json()["job_id"] == asked.json()["job_id"]  # idempotent per attempt

    [quiesce] = await claim(guest)
    assert quiesce["kind"] == "quiesce" and quiesce["quiesce"]["backup_job_id"] == backup["job_id"]
    progress = f"/api/v1/agent/jobs/{quiesce['job_id']}/progress"
    ack = await guest.post(progress, json={"phase": "frozen"})
    assert ack.status_code == 200 and ack.json()["release_requested"] is False
    assert (await proxy.get(base)).json()["frozen"] is True

    # A worker of another attempt (one the lease moved past, alive on the same proxy) cannot
    # thaw the guest under the current attempt's snapshot.
    stale = await proxy.post(f"{base}/release", params={"attempt": backup["attempt"] + 1})
    assert stale.status_code == 409 and "superseded" in stale.json()["detail"], stale.text
    assert (await guest.post(progress, json={"phase": "frozen"})).json()["release_requested"] is False

    assert (await proxy.post(f"{base}/release", params={"attempt": backup["attempt"]})).status_code == 200
    assert (await guest.post(progress, json={"phase": "frozen"})).json()["release_requested"] is True
    done = await guest.post(
        f"/api/v1/agent/jobs/{quiesce['job_id']}/complete",
        json={
            "outcome": "succeeded",
            "quiesce": {
                "frozen_at": "2026-01-05T22:00:00Z",
                "thawed_at": "2026-01-05T22:00:05Z",
                "held_until_release": True,
                "engines": ["postgresql"],
            },
        },
    )
    assert done.status_code == 204, done.text
    status = (await proxy.get(base)).json()
    assert status["state"] == "succeeded" and status["result"]["held_until_release"] is True

    # Another agent's token cannot drive this backup's quiesce.
    other = make_client((await register_proxy(operator, "other", [hosts[0]["id"]]))["token"])
    assert (await other.get(base)).status_code == 409
    assert (await guest.post(base)).status_code in (404, 409)

    # A guest agent in another tenant's VM cannot tell these jobs from ids that do not exist.
    other_customer, _, other_vms = await synced_tenant(operator, customer_of, vcsim, "Other")
    stranger = make_client((await register_guest(other_customer, other_vms[0]["id"]))["token"])
    for job_id in (backup["job_id"], quiesce["job_id"], str(uuid.uuid4())):
        answers = [
            await stranger.post(f"/api/v1/agent/jobs/{job_id}/progress", json={"phase": "x"}),
            await stranger.post(f"/api/v1/agent/jobs/{job_id}/complete", json={"outcome": "failed"}),
            await stranger.get(f"/api/v1/agent/jobs/{job_id}/quiesce"),
            await stranger.post(f"/api/v1/agent/jobs/{job_id}/quiesce"),
            await stranger.post(f"/api/v1/agent/jobs/{job_id}/quiesce/release"),
        ]
        assert [a.status_code for a in answers] == [404] * 5, [a.text for a in answers]


async def test_application_restores_into_the_same_place_wait_for_each_other(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
) -> None:
    """Two loads of one database (each may drop what the other created) or two file sets into one
    directory, one inside the other, are refused while the first is active; other targets run."""
    from app.restore_points.models import RestorePoint

    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    await register_guest(customer, vm["id"])
    point_id = uuid.uuid4()
    async with ctx.sessionmaker.begin() as session:
        session.add(
            RestorePoint(
                id=point_id,
                tenant_id=tenant_id,
                vm_id=uuid.UUID(vm["id"]),
                created_at=ctx.clock.now(),
                vm_name=vm["name"],
                location="onsite",
                consistency="application",
                size_bytes=2,
                bytes_read=2,
                bytes_new=2,
                bytes_stored=2,
                disks=[],
                kind="application",
                streams=[
                    {
                        "name": "postgresql/sales",
                        "engine": "postgresql",
                        "instance": "default",
                        "database": "sales",
                        "size": 1,
                    },
                    {"name": "files/srv", "engine": "files", "instance": None, "database": None, "size": 1},
                ],
                warnings=[],
            )
        )

    async def restore(**body: Any) -> httpx.Response:
        return await customer.post(
            "/api/v1/restores", json={"restore_point_id": str(point_id), "type": "application", **body}
        )

    first = await restore(stream="postgresql/sales")
    assert first.status_code == 202, first.text
    same = await restore(stream="postgresql/sales", target_database="sales")
    assert same.status_code == 409 and first.json()["id"] in same.json()["detail"], same.text
    assert (await restore(stream="postgresql/sales", target_database="sales_copy")).status_code == 202

    files = await restore(stream="files/srv", target_directory="/srv/restore")
    assert files.status_code == 202, files.text
    for inside in ("/srv/restore", "/srv/restore/sub", "/srv"):
        clash = await restore(stream="files/srv", target_directory=inside)
        assert clash.status_code == 409 and "directory" in clash.json()["detail"], (inside, clash.text)
    assert (await restore(stream="files/srv", target_directory="/srv/restore-2")).status_code == 202

    # Once the first ends, its database is free again.
    async with ctx.sessionmaker.begin() as session:
        from app.restores.models import Restore

        restore_row = await session.get(Restore, uuid.UUID(first.json()["id"]))
        assert restore_row is not None
        restore_row.state = "cancelled"
    assert (await restore(stream="postgresql/sales")).status_code == 202
    listed = (await customer.get("/api/v1/restores", params={"vm_id": vm["id"]})).json()
    assert listed["total"] == 5
