"""The alert loop over a real catalog (vcsim inventory): each condition opens its alert once and
closes it when it clears; operators are told through the integrations' signed delivery."""

from __future__ import annotations

import inspect
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.agent.runners.backup import BackupRunner
from app.alerts.loop import AlertLoop
from app.alerts.repository import SNAPSHOT_NOT_REMOVED
from app.clock import ManualClock
from app.compliance.recorder import RpoRecorder
from app.context import AppContext
from app.inventory.models import Datastore
from app.jobs.models import Job
from tests.api.test_isolation import record_restore_point
from tests.api.test_policies import create_policy, synced_tenant
from tests.api.test_proxies import BEAT, register_proxy
from tests.integrations.support import Receiver, check_signature, create_integration, loops
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

CLAIM = {"capacity": 4, "wait_s": 0}
NOT_REMOVED = "the backup snapshot could not be removed (task failed); the proxy retries at its next start"


@pytest.fixture
def alert_loop(ctx: AppContext) -> AlertLoop:
    return AlertLoop(ctx.sessionmaker, ctx.clock, proxy_stale_after_s=90, proxy_offline_after_s=300)


async def alerts(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get("/api/v1/alerts", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def keyed(client: httpx.AsyncClient, kind: str, **params: Any) -> dict[str, dict[str, Any]]:
    return {a["key"]: a for a in await alerts(client, kind=kind, **params)}


async def run_job(
    operator: httpx.AsyncClient, agent: httpx.AsyncClient, vm_id: str, **outcome: Any
) -> dict[str, Any]:
    """Queue a backup of one VM, let the agent claim it and report ``outcome``."""
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm_id]})).json()[0]
    claimed = (await agent.post("/api/v1/agent/jobs/claim", json=CLAIM)).json()["jobs"]
    assert job["id"] in [j["job_id"] for j in claimed]
    done = await agent.post(f"/api/v1/agent/jobs/{job['id']}/complete", json=outcome)
    assert done.status_code == 204, done.text
    return job  # type: ignore[no-any-return]


async def succeed(ctx: AppContext, operator: httpx.AsyncClient, vm_id: str) -> None:
    """A backup that succeeded (recorded directly: a real one needs a repository and a proxy run)."""
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm_id]})).json()[0]
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Job)
            .where(Job.id == uuid.UUID(job["id"]))
            .values(state="succeeded", started_at=ctx.clock.now(), finished_at=ctx.clock.now())
        )


async def online_proxy(
    operator: httpx.AsyncClient, make_client: ClientFactory, *host_ids: str
) -> tuple[dict[str, Any], httpx.AsyncClient]:
    proxy = await register_proxy(operator, f"proxy-{uuid.uuid4().hex[:6]}", list(dict.fromkeys(host_ids)))
    agent = make_client(proxy["token"])
    assert (await agent.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 200
    return proxy, agent


async def test_failed_and_skipped_backups_alert_until_a_success(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
    alert_loop: AlertLoop,
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    other, _ = await customer_of("Other")
    vm0, vm1 = vms[0], vms[1]
    policy = await create_policy(
        operator, tenant_id, name="gold", selection={"vm_ids": [vm0["id"], vm1["id"]]}
    )
    _, agent = await online_proxy(operator, make_client, vm0["host"]["id"], vm1["host"]["id"])

    await run_job(
        operator, agent, vm0["id"], outcome="failed", error="disk read failed", error_kind="permanent"
    )
    await run_job(
        operator, agent, vm1["id"], outcome="skipped", error="datastore ds1 has 8.0% free (below 10%)"
    )
    await alert_loop.run_once()
    await alert_loop.run_once()  # re-evaluating opens nothing twice
    assert alert_loop.last_report.opened == 0
    found = await keyed(operator, "backup_failed")
    assert set(found) == {f"backup_failed:{vm0['id']}", f"backup_failed:{vm1['id']}"}
    failed = found[f"backup_failed:{vm0['id']}"]
    assert failed["severity"] == "warning" and failed["tenant_id"] == str(tenant_id)
    assert failed["message"] == f"Backup of VM {vm0['name']} failed: disk read failed"
    assert "was skipped: datastore ds1" in found[f"backup_failed:{vm1['id']}"]["message"]
    # Customers see their VMs' alerts, not other tenants'.
    assert set(await keyed(customer, "backup_failed")) == set(found)
    assert await alerts(other) == []

    clock.advance(timedelta(hours=1))
    await succeed(ctx, operator, vm0["id"])
    await alert_loop.run_once()
    assert alert_loop.last_report.closed == 1
    assert set(await keyed(operator, "backup_failed")) == {f"backup_failed:{vm1['id']}"}
    closed = await keyed(operator, "backup_failed", state="closed")
    assert closed[f"backup_failed:{vm0['id']}"]["closed_at"] is not None

    # A VM that is no longer protected stops alerting (no backup will come to clear it).
    response = await operator.patch(
        f"/api/v1/policies/{policy['id']}", json={"selection": {"vm_ids": [vm0["id"]]}}
    )
    assert response.status_code == 200, response.text
    await alert_loop.run_once()
    assert await keyed(operator, "backup_failed") == {}
    assert len(await keyed(operator, "backup_failed", state="all")) == 2


async def test_rpo_breach_alerts_while_the_breach_is_open(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    alert_loop: AlertLoop,
) -> None:
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    await create_policy(operator, tenant_id, name="gold", rpo_hours=24, selection={"vm_ids": [vms[0]["id"]]})
    recorder = RpoRecorder(ctx.sessionmaker, ctx.clock)
    await recorder.run_once()
    clock.advance(timedelta(hours=25))
    await recorder.run_once()
    await alert_loop.run_once()
    breach = (await keyed(operator, "rpo_breach"))[f"rpo_breach:{vms[0]['id']}"]
    assert breach["severity"] == "critical" and "RPO of 24 h" in breach["message"]

    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    await record_restore_point(ctx, uuid.UUID(job["id"]))
    await recorder.run_once()
    await alert_loop.run_once()
    assert await keyed(operator, "rpo_breach") == {}
    assert list(await keyed(operator, "rpo_breach", state="closed")) == [f"rpo_breach:{vms[0]['id']}"]


async def test_an_offline_proxy_alerts_operators_until_it_is_back(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
    alert_loop: AlertLoop,
) -> None:
    customer, _, vms = await synced_tenant(operator, customer_of, vcsim)
    proxy, agent = await online_proxy(operator, make_client, vms[0]["host"]["id"])
    guest = await customer.post("/api/v1/guest-agents", json={"vm_id": vms[0]["id"]})
    assert guest.status_code == 201  # never heartbeats: guest agents are not alerted on
    await alert_loop.run_once()
    assert await keyed(operator, "proxy_offline") == {}
    clock.advance(timedelta(seconds=120))  # stale is not offline
    await alert_loop.run_once()
    assert await keyed(operator, "proxy_offline") == {}
    clock.advance(timedelta(seconds=200))
    await alert_loop.run_once()
    await alert_loop.run_once()
    offline = await keyed(operator, "proxy_offline")
    assert list(offline) == [f"proxy_offline:{proxy['id']}"]
    assert offline[f"proxy_offline:{proxy['id']}"]["tenant_id"] is None
    assert "no heartbeat since" in offline[f"proxy_offline:{proxy['id']}"]["message"]
    assert await alerts(customer) == []  # the service's own parts are the operators' business

    await agent.post("/api/v1/agent/heartbeat", json=BEAT)
    await alert_loop.run_once()
    assert await keyed(operator, "proxy_offline") == {}


async def set_space(ctx: AppContext, datastore_id: str, percent: float, status: str) -> None:
    async with ctx.sessionmaker.begin() as session:
        capacity = 1000 * 2**30
        await session.execute(
            update(Datastore)
            .where(Datastore.id == uuid.UUID(datastore_id))
            .values(
                capacity_bytes=capacity,
                free_bytes=int(capacity * percent / 100),
                free_percent=percent,
                space_status=status,
            )
        )


async def test_a_datastores_alert_follows_its_free_space_and_is_delivered_signed(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    alert_loop: AlertLoop,
) -> None:
    customer, tenant_id, _ = await synced_tenant(operator, customer_of, vcsim)
    receiver = Receiver()
    try:
        integration = await create_integration(operator, url=receiver.url)
        datastores = (await operator.get("/api/v1/datastores", params={"tenant_id": str(tenant_id)})).json()
        ds = datastores["items"][0]
        for datastore in datastores["items"]:
            await set_space(ctx, datastore["id"], 50.0, "ok")
        await set_space(ctx, ds["id"], 12.5, "warning")
        await alert_loop.run_once()
        key = f"datastore_low:{ds['id']}"
        warning = (await keyed(customer, "datastore_low"))[key]
        assert warning["severity"] == "warning"
        assert (
            warning["message"] == f"Datastore {ds['name']} has 12.5% free (below 15%: backups stop below 10%)"
        )

        await set_space(ctx, ds["id"], 7.0, "critical")
        await alert_loop.run_once()
        assert (alert_loop.last_report.opened, alert_loop.last_report.revised) == (0, 1)
        critical = (await keyed(operator, "datastore_low"))[key]
        assert critical["id"] == warning["id"] and critical["severity"] == "critical"
        assert "below 10%: backups of its VMs are skipped" in critical["message"]

        await set_space(ctx, ds["id"], 40.0, "ok")
        await alert_loop.run_once()
        assert await keyed(operator, "datastore_low") == {}

        _, deliverer = loops(ctx)
        await deliverer.run_once()
        await deliverer.run_once()
        received = [r for r in receiver.requests if r.json["data"]["key"] == key]
        # The fall below 10% is announced: backups of the datastore's VMs stop from then on.
        assert [r.type for r in received] == ["alert.opened", "alert.severity_changed", "alert.closed"]
        for message in received:
            check_signature(integration["secret"], message)
        assert {r.json["data"]["id"] for r in received} == {warning["id"]}
        assert received[1].json["data"]["severity"] == "critical"
        assert "below 10%" in received[1].json["data"]["message"]
        assert received[2].json["data"]["closed_at"] is not None
    finally:
        receiver.stop()


def test_the_snapshot_warning_is_the_one_the_backup_runner_reports() -> None:
    assert SNAPSHOT_NOT_REMOVED in inspect.getsource(BackupRunner)
    assert SNAPSHOT_NOT_REMOVED in NOT_REMOVED


async def test_a_snapshot_left_behind_queues_clean_ups_until_one_succeeds(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
    alert_loop: AlertLoop,
) -> None:
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    proxy, agent = await online_proxy(operator, make_client, vm["host"]["id"])
    backup = await run_job(
        operator, agent, vm["id"], outcome="failed", error="disk read failed", warnings=[NOT_REMOVED]
    )
    await alert_loop.run_once()
    await alert_loop.run_once()
    key = f"snapshot_left:{vm['id']}"
    left = (await keyed(operator, "snapshot_left"))[key]
    name = f"vmrecovery-{proxy['id']}-{backup['id']}-1"
    assert left["detail"]["snapshot_name"] == name and "a clean-up job is queued" in left["message"]
    cleanups = (await operator.get("/api/v1/jobs", params={"kind": "snapshot_cleanup"})).json()["items"]
    assert len(cleanups) == 1  # once, whatever the number of evaluations

    async def run_cleanup(**outcome: Any) -> None:
        claimed = (await agent.post("/api/v1/agent/jobs/claim", json=CLAIM)).json()["jobs"]
        assert [(j["kind"], j["cleanup"]["snapshot_name"]) for j in claimed] == [("snapshot_cleanup", name)]
        done = await agent.post(f"/api/v1/agent/jobs/{claimed[0]['job_id']}/complete", json=outcome)
        assert done.status_code == 204, done.text

    await run_cleanup(outcome="failed", error="snapshot is locked", error_kind="permanent")
    await alert_loop.run_once()
    still = (await keyed(operator, "snapshot_left"))[key]
    assert still["id"] == left["id"] and "1 clean-up attempt(s) failed" in still["message"]
    assert len((await operator.get("/api/v1/jobs", params={"kind": "snapshot_cleanup"})).json()["items"]) == 1
    clock.advance(timedelta(minutes=61))  # a failed clean-up is tried again an hour later
    await alert_loop.run_once()
    await alert_loop.run_once()
    assert alert_loop.last_report.cleanups_queued == 0
    assert len((await operator.get("/api/v1/jobs", params={"kind": "snapshot_cleanup"})).json()["items"]) == 2
    await agent.post("/api/v1/agent/heartbeat", json=BEAT)
    await run_cleanup(outcome="succeeded", warnings=[f"no snapshot {name} was left on the VM"])
    await alert_loop.run_once()
    assert await keyed(operator, "snapshot_left") == {}
