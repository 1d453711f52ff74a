"""Jobs through the API and the agent channel (in-process app, real databases, vcsim inventory)."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.auth.principal import Principal, Role
from app.clock import ManualClock
from app.context import AppContext
from app.domain.jobs import JobState
from app.jobs.models import Job
from app.jobs.repository import JobRepository
from app.jobs.service import JobService
from app.scheduler.reaper import ReaperLoop
from tests.api.test_isolation import record_restore_point
from tests.api.test_policies import create_policy, synced_tenant
from tests.api.test_proxies import register_proxy
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

CLAIM = {"capacity": 4, "wait_s": 0}
OPERATOR = Principal(key_id=None, role=Role.OPERATOR, tenant_id=None)


async def restore_over_the_vm(operator: httpx.AsyncClient, point_id: uuid.UUID) -> str:
    """An operator restores the point over its VM (powered off first), approved if the tenant
    asks for approvals; returns the restore's id."""
    restore = await operator.post(
        "/api/v1/restores", json={"restore_point_id": str(point_id), "target": "original", "force": True}
    )
    assert restore.status_code == 202, restore.text
    restore_id: str = restore.json()["id"]
    if restore.json()["state"] == "awaiting_approval":
        assert (await operator.post(f"/api/v1/restores/{restore_id}/approve")).status_code == 200
    return restore_id


async def claim(agent: httpx.AsyncClient, capacity: int = 4) -> list[dict[str, Any]]:
    response = await agent.post("/api/v1/agent/jobs/claim", json={**CLAIM, "capacity": capacity})
    assert response.status_code == 200, response.text
    return response.json()["jobs"]  # type: ignore[no-any-return]


async def test_manual_backups_are_queued_once_per_vm(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    await create_policy(
        operator,
        tenant_id,
        name="gold",
        application_aware=True,
        retry_count=5,
        selection={"vm_ids": [vms[0]["id"]]},
    )
    created = await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"], vms[1]["id"]]})
    assert created.status_code == 201, created.text
    jobs = created.json()
    assert [j["state"] for j in jobs] == ["queued", "queued"]
    assert jobs[0]["max_attempts"] == 6 and jobs[0]["policy_id"] is not None
    assert jobs[1]["policy_id"] is None
    again = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()
    assert again[0]["id"] == jobs[0]["id"]  # no second job for the same VM
    assert (await operator.get("/api/v1/jobs")).json()["total"] == 2
    assert (await customer.get("/api/v1/jobs", params={"vm_id": vms[0]["id"]})).json()["total"] == 1
    assert (await customer.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).status_code == 403
    unknown = await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"], str(uuid.uuid4())]})
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "body.vm_ids.1"
    assert (await operator.get("/api/v1/jobs")).json()["total"] == 2


async def test_cancel_a_queued_job_and_a_running_one(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
) -> None:
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    queued = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    cancelled = await operator.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert cancelled.json()["state"] == "cancelled"
    assert (await operator.post(f"/api/v1/jobs/{queued['id']}/cancel")).status_code == 409

    proxy = await register_proxy(operator, "p", [vms[1]["host"]["id"]])
    agent = make_client(proxy["token"])
    running = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[1]["id"]]})).json()[0]
    (claimed,) = await claim(agent)
    assert claimed["job_id"] == running["id"]
    requested = (await operator.post(f"/api/v1/jobs/{running['id']}/cancel")).json()
    assert requested["state"] == "running" and requested["cancel_requested"] is True
    ack = await agent.post(f"/api/v1/agent/jobs/{running['id']}/progress", json={"phase": "reading"})
    assert ack.json()["cancel_requested"] is True
    done = await agent.post(f"/api/v1/agent/jobs/{running['id']}/complete", json={"outcome": "cancelled"})
    assert done.status_code == 204
    assert (await operator.get(f"/api/v1/jobs/{running['id']}")).json()["state"] == "cancelled"


async def test_claims_follow_the_vms_host_and_restores_go_first(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    customer, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    other_host = next(
        h for h in (await operator.get("/api/v1/hosts")).json()["items"] if h["id"] != vm["host"]["id"]
    )
    elsewhere = make_client((await register_proxy(operator, "elsewhere", [other_host["id"]]))["token"])
    here = make_client((await register_proxy(operator, "here", [vm["host"]["id"]]))["token"])

    backup = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()[0]
    point_id = await record_restore_point(ctx, uuid.UUID(backup["id"]))
    restore = await customer.post(
        "/api/v1/restores",
        json={
            "restore_point_id": str(point_id),
            "target": "new",
            "new_vm": {
                "name": "copy",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    assert restore.status_code == 202, restore.text
    assert restore.json()["state"] == "requested" and restore.json()["initiated_at"] is None

    assert [j for j in await claim(elsewhere) if j["vm"]["id"] == vm["id"]] == []
    claimed = await claim(here)
    assert [j["kind"] for j in claimed] == ["restore", "backup"]
    assert claimed[0]["vcenter"]["password"] == vcsim.password  # handed over per job...
    assert vcsim.password not in caplog.text  # ...and never logged
    assert claimed[1]["backup"]["snapshot_name"].startswith("vmrecovery-")
    initiated = (await customer.get(f"/api/v1/restores/{restore.json()['id']}")).json()
    assert initiated["state"] == "running" and initiated["initiated_at"] is not None


async def test_a_restore_whose_lease_lapsed_is_requested_again(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """The reaper re-queues a restore's job: the restore follows it back to "requested" (it is not
    running anywhere), and forward again when another proxy takes it."""
    customer, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    host_id = vm["host"]["id"]
    first = make_client((await register_proxy(operator, "first", [host_id]))["token"])
    second = make_client((await register_proxy(operator, "second", [host_id]))["token"])
    backup = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()[0]
    point_id = await record_restore_point(ctx, uuid.UUID(backup["id"]))
    new_vm = {"name": "copy", "host_id": host_id, "datastore_id": vm["datastores"][0]["id"]}
    created = await customer.post(
        "/api/v1/restores",
        json={"restore_point_id": str(point_id), "target": "new", "new_vm": new_vm},
    )
    assert created.status_code == 202, created.text
    url = f"/api/v1/restores/{created.json()['id']}"
    assert [j["kind"] for j in await claim(first)] == ["restore", "backup"]
    assert (await customer.get(url)).json()["state"] == "running"

    clock.advance(timedelta(seconds=121))
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.requeued == 2
    requeued = (await customer.get(url)).json()
    assert requeued["state"] == "requested" and requeued["completed_at"] is None

    clock.advance(timedelta(minutes=10))
    assert "restore" in [j["kind"] for j in await claim(second)]
    assert (await customer.get(url)).json()["state"] == "running"


async def test_lapsed_lease_moves_the_job_and_the_old_proxy_is_refused(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    host_id = vms[0]["host"]["id"]
    first_proxy = await register_proxy(operator, "first", [host_id])
    first = make_client(first_proxy["token"])
    second = make_client((await register_proxy(operator, "second", [host_id]))["token"])
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    assert [j["job_id"] for j in await claim(first)] == [job["id"]]
    assert await claim(second) == []
    clock.advance(timedelta(seconds=121))  # the default lease is 120 s
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.requeued == 1 and reaper.last_report.cleanups == 1
    claimed = await claim(second)
    by_kind = {j["kind"]: j for j in claimed}
    taken = by_kind["backup"]
    assert taken["job_id"] == job["id"] and taken["attempt"] == 2
    # The lost proxy's snapshot gets a clean-up job, ahead of backups.
    assert [j["kind"] for j in claimed] == ["snapshot_cleanup", "backup"]
    # It names the lost attempt's snapshot, never the retry's: a retry on the same proxy must
    # not have its snapshot removed under it.
    lost = f"vmrecovery-{first_proxy['id']}-{job['id']}-1"
    assert by_kind["snapshot_cleanup"]["cleanup"]["snapshot_name"] == lost
    assert taken["backup"]["snapshot_name"] != lost
    late = await first.post(f"/api/v1/agent/jobs/{job['id']}/progress", json={"phase": "reading"})
    assert late.status_code == 409
    late_done = await first.post(f"/api/v1/agent/jobs/{job['id']}/complete", json={"outcome": "failed"})
    assert late_done.status_code == 409
    # A successful backup must name the restore point it was given.
    bad = await second.post(f"/api/v1/agent/jobs/{job['id']}/complete", json={"outcome": "succeeded"})
    assert bad.status_code == 422
    transient = await second.post(
        f"/api/v1/agent/jobs/{job['id']}/complete",
        json={"outcome": "failed", "error": "vCenter went away", "error_kind": "transient"},
    )
    assert transient.status_code == 204
    retry = (await operator.get(f"/api/v1/jobs/{job['id']}")).json()
    assert retry["state"] == "queued" and retry["error"] == "vCenter went away"
    assert await claim(second) == []  # backing off
    clock.advance(timedelta(minutes=6))
    assert [j["job_id"] for j in await claim(second)] == [job["id"]]
    permanent = await second.post(
        f"/api/v1/agent/jobs/{job['id']}/complete",
        json={"outcome": "failed", "error": "VM is gone", "error_kind": "permanent"},
    )
    assert permanent.status_code == 204
    assert (await operator.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "failed"


async def test_an_earlier_attempt_on_the_same_proxy_is_refused_and_writes_another_point(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """The only proxy of a host loses the service long enough for its lease to lapse, then claims
    the job again while its first worker is still alive."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    proxy = make_client((await register_proxy(operator, "only", [vms[0]["host"]["id"]]))["token"])
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    [first] = await claim(proxy)
    clock.advance(timedelta(seconds=121))
    await ReaperLoop(ctx.sessionmaker, clock).run_once()
    second = next(j for j in await claim(proxy) if j["kind"] == "backup")
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["backup"]["restore_point_id"] != second["backup"]["restore_point_id"]

    base = f"/api/v1/agent/jobs/{job['id']}"
    stale = await proxy.post(f"{base}/progress?attempt=1", json={"phase": "reading"})
    assert stale.status_code == 409 and "superseded" in stale.json()["detail"]
    stale_end = await proxy.post(
        f"{base}/complete?attempt=1", json={"outcome": "failed", "error": "x", "error_kind": "permanent"}
    )
    assert stale_end.status_code == 409
    assert (await operator.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "running"
    current = await proxy.post(f"{base}/progress?attempt=2", json={"phase": "reading"})
    assert current.status_code == 200, current.text
    # The first attempt's point id is not the job's any more.
    first_point = {
        "restore_point_id": first["backup"]["restore_point_id"],
        "created_at": "2026-01-01T00:00:00Z",
    }
    wrong = await proxy.post(
        f"{base}/complete?attempt=2",
        json={"outcome": "succeeded", "backup": {**first_point, "consistency": "crash", "disks": []}},
    )
    assert wrong.status_code == 422


async def test_restore_requests_are_validated(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    acme, _, vms = await synced_tenant(operator, customer_of, vcsim, "Acme")
    globex, _ = await customer_of("Globex")
    vm = vms[0]
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()[0]
    point_id = str(await record_restore_point(ctx, uuid.UUID(job["id"])))
    original = {"restore_point_id": point_id, "target": "original"}
    assert vm["power_state"] == "poweredOn"
    refused = await acme.post("/api/v1/restores", json=original)
    assert refused.status_code == 409 and "force" in refused.json()["detail"]
    assert (await globex.post("/api/v1/restores", json=original)).status_code == 404
    assert (
        await acme.post("/api/v1/restores", json={**original, "restore_point_id": str(uuid.uuid4())})
    ).status_code == 404
    no_target = await acme.post("/api/v1/restores", json={"restore_point_id": point_id, "target": "new"})
    assert no_target.status_code == 422
    bad_host = await acme.post(
        "/api/v1/restores",
        json={
            "restore_point_id": point_id,
            "target": "new",
            "new_vm": {"name": "x", "host_id": str(uuid.uuid4()), "datastore_id": vm["datastores"][0]["id"]},
        },
    )
    assert bad_host.status_code == 422 and bad_host.json()["errors"][0]["field"] == "body.new_vm.host_id"
    bad_datastore = await acme.post(
        "/api/v1/restores",
        json={
            "restore_point_id": point_id,
            "target": "new",
            "new_vm": {"name": "x", "host_id": vm["host"]["id"], "datastore_id": str(uuid.uuid4())},
        },
    )
    assert bad_datastore.status_code == 422, bad_datastore.text
    assert bad_datastore.json()["errors"][0]["field"] == "body.new_vm.datastore_id"
    assert (await acme.get("/api/v1/restores")).json()["total"] == 0
    forced = await acme.post("/api/v1/restores", json={**original, "force": True})
    assert forced.status_code == 202
    busy = await acme.post("/api/v1/restores", json={**original, "force": True})
    assert busy.status_code == 409 and "already in progress" in busy.json()["detail"]
    point = (await acme.get(f"/api/v1/restore-points/{point_id}")).json()
    assert point["vm_id"] == vm["id"] and point["disks"][0]["size"] == 1 << 20
    assert (await globex.get(f"/api/v1/restore-points/{point_id}")).status_code == 404


async def test_after_a_restore_over_the_vm_its_next_backup_reads_the_disks_whole(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """A restore over the original VM writes its disk files through the datastore, which CBT does
    not see: an incremental from the point before it would keep the pre-restore data of every
    restored block the guest did not write again."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    proxy = make_client((await register_proxy(operator, "here", [vm["host"]["id"]]))["token"])

    async def next_backup() -> dict[str, Any]:
        job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()[0]
        [assigned] = [j for j in await claim(proxy) if j["job_id"] == job["id"]]
        failed = {"outcome": "failed", "error": "stopped by the test", "error_kind": "permanent"}
        ended = await proxy.post(f"/api/v1/agent/jobs/{job['id']}/complete?attempt=1", json=failed)
        assert ended.status_code == 204, ended.text
        return assigned

    first = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()[0]
    point_id = await record_restore_point(ctx, uuid.UUID(first["id"]))
    await operator.post(f"/api/v1/jobs/{first['id']}/cancel")
    clock.advance(timedelta(hours=1))
    previous = (await next_backup())["backup"]["previous"]
    assert previous is not None and previous["id"] == str(point_id)

    restore_id = await restore_over_the_vm(operator, point_id)
    [restore_job] = [j for j in await claim(proxy) if j["kind"] == "restore"]
    clock.advance(timedelta(minutes=10))
    done = {"outcome": "succeeded", "restore": {"vm_moid": vm["moid"], "vm_name": vm["name"]}}
    ended = await proxy.post(f"/api/v1/agent/jobs/{restore_job['job_id']}/complete?attempt=1", json=done)
    assert ended.status_code == 204, ended.text
    assert (await operator.get(f"/api/v1/restores/{restore_id}")).json()["state"] == "succeeded"

    clock.advance(timedelta(hours=1))
    assert (await next_backup())["backup"]["previous"] is None


async def test_a_job_cancelled_while_its_proxy_died_ends_cancelled(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """Re-queued, it would never be claimed (a cancel-requested job is not) and would hold its
    VM's place: every later backup of the VM would be answered with it."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    proxy = make_client((await register_proxy(operator, "p", [vm["host"]["id"]]))["token"])
    (job,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    assert [j["job_id"] for j in await claim(proxy)] == [job["id"]]
    assert (await operator.post(f"/api/v1/jobs/{job['id']}/cancel")).json()["cancel_requested"] is True
    clock.advance(timedelta(seconds=ctx.settings.job_lease_s + 1))  # the proxy died before it saw it
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.cancelled == 1 and reaper.last_report.requeued == 0
    assert reaper.last_report.cleanups == 1  # its snapshot may still be on the VM
    ended = (await operator.get(f"/api/v1/jobs/{job['id']}")).json()
    assert ended["state"] == "cancelled" and "lease expired" in ended["error"]
    (again,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    assert again["id"] != job["id"] and again["state"] == "queued"


async def test_a_late_proxy_keeps_its_slot_until_the_reaper_takes_its_job_back(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """A lapsed lease still counts against the limits: the proxy may only be late, and a report
    after the lapse keeps its job going; giving the slot away at the lapse ran two backups on a
    host limited to one."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    host, same_host = next(
        (h, [vm for vm in vms if vm["host"]["id"] == h])
        for h in (vm["host"]["id"] for vm in vms)
        if sum(vm["host"]["id"] == h for vm in vms) >= 2
    )
    ctx.settings.limit_per_host = 1
    proxy = make_client((await register_proxy(operator, "p", [host]))["token"])
    await operator.post("/api/v1/jobs", json={"vm_ids": [same_host[0]["id"], same_host[1]["id"]]})
    (first,) = await claim(proxy)
    clock.advance(timedelta(seconds=ctx.settings.job_lease_s + 1))  # lapsed; the reaper has not run
    assert await claim(proxy) == []  # the host's one slot is still the first backup's
    late = await proxy.post(
        f"/api/v1/agent/jobs/{first['job_id']}/progress",
        params={"attempt": first["attempt"]},
        json={"phase": "reading"},
    )
    assert late.status_code == 200, late.text
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.requeued == 0  # the report renewed the lease
    assert await claim(proxy) == []

    clock.advance(timedelta(seconds=ctx.settings.job_lease_s + 1))  # now it really is gone
    await reaper.run_once()
    assert reaper.last_report.requeued == 1
    claimed = [j for j in await claim(proxy) if j["kind"] == "backup"]
    assert len(claimed) == 1  # one backup on the host again (the other VM's or the retry)


async def test_the_reaper_leaves_a_job_whose_proxy_reported_after_it_looked(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """On PostgreSQL the reaper's read and its update are two statements; a progress report can
    commit between them. Its update must then change nothing (acted out here in that order)."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    proxy = make_client((await register_proxy(operator, "p", [vms[0]["host"]["id"]]))["token"])
    await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})
    (claimed,) = await claim(proxy)
    clock.advance(timedelta(seconds=ctx.settings.job_lease_s + 1))
    async with ctx.sessionmaker() as reaper_session:
        job = await JobRepository(reaper_session).get(uuid.UUID(claimed["job_id"]))
        assert job is not None and job.lease_expires_at is not None
        await reaper_session.commit()  # the read is done; the report lands now
        report = await proxy.post(
            f"/api/v1/agent/jobs/{claimed['job_id']}/progress",
            params={"attempt": claimed["attempt"]},
            json={"phase": "reading"},
        )
        assert report.status_code == 200
        won = await JobRepository(reaper_session).transition(
            job, JobState.QUEUED, lapsed_by=clock.now(), proxy_id=None, lease_expires_at=None
        )
        await reaper_session.commit()
    assert won is False
    assert (await operator.get(f"/api/v1/jobs/{claimed['job_id']}")).json()["state"] == "running"


async def test_a_cancel_that_loses_to_a_claim_asks_the_proxy_to_stop(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
) -> None:
    """The cancel reads the job queued, a claim commits, the cancel's update finds it running:
    the cancel must read it again from the catalog (not the session's stale copy) and ask the
    proxy to stop, not answer that a queued job "already ended"."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    proxy = make_client((await register_proxy(operator, "p", [vms[0]["host"]["id"]]))["token"])
    (job,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()
    async with ctx.sessionmaker() as session:
        service = JobService(session, ctx.clock)
        read = await service.get(OPERATOR, uuid.UUID(job["id"]))
        assert read.state == "queued"
        await session.commit()  # the cancel's read is done; the claim lands now
        (claimed,) = await claim(proxy)
        cancelled = await service.cancel(OPERATOR, uuid.UUID(job["id"]))
        await session.commit()
    assert cancelled.state == "running" and cancelled.cancel_requested is True
    ack = await proxy.post(
        f"/api/v1/agent/jobs/{claimed['job_id']}/progress",
        params={"attempt": claimed["attempt"]},
        json={"phase": "reading"},
    )
    assert ack.json()["cancel_requested"] is True


async def _end(agent: httpx.AsyncClient, claimed: dict[str, Any]) -> None:
    done = await agent.post(
        f"/api/v1/agent/jobs/{claimed['job_id']}/complete",
        params={"attempt": claimed["attempt"]},
        json={"outcome": "failed", "error": "stopped by the test", "error_kind": "permanent"},
    )
    assert done.status_code == 204, done.text


async def test_a_vm_is_not_backed_up_while_a_restore_writes_over_it_nor_the_reverse(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """A backup's snapshot taken while a restore overwrites the disks would hold half old, half
    new data (labelled consistent: the VM is off); a restore over disks under a backup's snapshot
    fails. Each waits for the other, on any proxy, and a backup also waits while a restore that
    failed midway waits to retry."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    first = make_client((await register_proxy(operator, "first", [vm["host"]["id"]]))["token"])
    second = make_client((await register_proxy(operator, "second", [vm["host"]["id"]]))["token"])
    (initial,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    point_id = await record_restore_point(ctx, uuid.UUID(initial["id"]))

    (backup,) = await claim(first)
    assert backup["kind"] == "backup"
    await restore_over_the_vm(operator, point_id)
    assert await claim(second) == []  # the backup's snapshot is on the VM
    await _end(first, backup)
    (restore,) = await claim(second)
    assert restore["kind"] == "restore"

    (queued,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    assert await claim(first) == []  # the restore is writing the disks
    failed = await second.post(
        f"/api/v1/agent/jobs/{restore['job_id']}/complete",
        params={"attempt": restore["attempt"]},
        json={"outcome": "failed", "error": "datastore went away", "error_kind": "transient"},
    )
    assert failed.status_code == 204, failed.text
    assert await claim(first) == []  # its disks are half written until the retry finishes
    clock.advance(timedelta(minutes=10))
    (retry,) = await claim(second)
    assert retry["job_id"] == restore["job_id"] and retry["attempt"] == 2
    await _end(second, retry)
    (after,) = await claim(first)
    assert after["job_id"] == queued["id"]


async def test_a_restore_over_a_vm_waits_for_the_clean_up_of_a_lost_proxys_snapshot(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """A restore over a VM that still carries a lost backup's snapshot fails for good ("has
    snapshots"): it waits until the clean-up the reaper queued has run."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    lost = make_client((await register_proxy(operator, "lost", [vm["host"]["id"]]))["token"])
    proxy = make_client((await register_proxy(operator, "p", [vm["host"]["id"]]))["token"])
    (backup,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    point_id = await record_restore_point(ctx, uuid.UUID(backup["id"]))
    assert [j["job_id"] for j in await claim(lost)] == [backup["id"]]
    clock.advance(timedelta(seconds=ctx.settings.job_lease_s + 1))
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.cleanups == 1
    assert (await operator.post(f"/api/v1/jobs/{backup['id']}/cancel")).status_code == 200
    await restore_over_the_vm(operator, point_id)

    (cleanup,) = await claim(proxy)
    assert cleanup["kind"] == "snapshot_cleanup"
    assert await claim(proxy) == []  # the restore waits for the clean-up
    await _end(proxy, cleanup)
    (restore,) = await claim(proxy)
    assert restore["kind"] == "restore"


async def test_a_job_re_queued_while_a_cancel_was_asked_ends_cancelled(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """A cancel that lands between a re-queue's read and its write leaves the job queued with the
    request set (acted out here): no proxy takes it, so the reaper ends it."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    (job,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Job).where(Job.id == uuid.UUID(job["id"])).values(cancel_requested=True, attempt=1)
        )
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.cancelled == 1
    ended = (await operator.get(f"/api/v1/jobs/{job['id']}")).json()
    assert ended["state"] == "cancelled" and "cancelled" in ended["error"]
    (again,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()
    assert again["id"] != job["id"]


async def test_a_proxy_with_running_jobs_is_deleted_only_once_they_are_taken_back(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    """Deleted while its backup ran, the proxy's id would leave the job (ON DELETE SET NULL) and
    with it the name of the snapshot the reaper queues a clean-up for."""
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    registered = await register_proxy(operator, "doomed", [vms[0]["host"]["id"]])
    proxy = make_client(registered["token"])
    await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})
    (job,) = await claim(proxy)
    refused = await operator.delete(f"/api/v1/proxies/{registered['id']}")
    assert refused.status_code == 409 and "lease lapses" in refused.json()["detail"], refused.text
    assert (await operator.get(f"/api/v1/proxies/{registered['id']}")).status_code == 200

    clock.advance(timedelta(seconds=ctx.settings.job_lease_s + 1))  # the agent was stopped
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.requeued == 1 and reaper.last_report.cleanups == 1
    assert (await operator.delete(f"/api/v1/proxies/{registered['id']}")).status_code == 204
    requeued = (await operator.get(f"/api/v1/jobs/{job['job_id']}")).json()
    assert requeued["state"] == "queued"
