"""Planner, reaper and dispatch watch against real databases, with a clock the test moves."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text, update

import app.scheduler.planner as planner_module
import app.scheduler.reaper as reaper_module
from app.clock import ManualClock
from app.context import AppContext
from app.db.engine import create_engine, create_sessionmaker
from app.jobs.models import Job
from app.policies.models import Policy
from app.scheduler.dispatch_watch import DispatchWatchLoop
from app.scheduler.planner import PlannerLoop
from app.scheduler.reaper import ReaperLoop
from tests.api.test_inventory import all_items
from tests.api.test_jobs import CLAIM, claim
from tests.api.test_policies import create_policy, synced_tenant
from tests.api.test_proxies import BEAT, register_proxy
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

MONDAY_2100 = datetime(2026, 1, 5, 21, 0, tzinfo=UTC)


async def protected_setup(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer, clock: ManualClock
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    clock.set(MONDAY_2100)
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    policy = await create_policy(
        operator,
        tenant_id,
        name="nightly",
        selection={"folders": ["/DC0/vm"]},
        schedule={"type": "weekly", "times": ["22:00"]},
        window={"start": "22:00", "duration_minutes": 480},
    )
    return vms, policy


async def jobs_of(operator: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    return await all_items(operator, "/api/v1/jobs", **params)


async def test_one_job_per_vm_and_slot_then_missed_then_one_catch_up(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    vms, policy = await protected_setup(operator, customer_of, vcsim, clock)
    planner = PlannerLoop(ctx.sessionmaker, clock)
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await planner.run_once()
    assert await jobs_of(operator) == []  # a new policy starts with the next slot, not a past one

    clock.set(MONDAY_2100 + timedelta(hours=1, seconds=30))
    await planner.run_once()
    await planner.run_once()  # a second tick (or replica) adds nothing
    jobs = await jobs_of(operator)
    assert sorted(j["vm_id"] for j in jobs) == sorted(vm["id"] for vm in vms)
    assert {j["trigger"] for j in jobs} == {"scheduled"}
    assert {j["max_attempts"] for j in jobs} == {policy["retry_count"] + 1}

    # The service is down for three days: the windows pass, nothing runs.
    clock.set(MONDAY_2100 + timedelta(days=3, hours=10))
    await reaper.run_once()
    missed = await jobs_of(operator, state="missed")
    assert len(missed) == len(vms)
    assert "backup window" in missed[0]["error"]
    await planner.run_once()
    catch_up = await jobs_of(operator, state="queued")
    assert len(catch_up) == len(vms)  # one per VM, not one per missed night
    assert {j["trigger"] for j in catch_up} == {"catch-up"}
    await planner.run_once()
    assert len(await jobs_of(operator, state="queued")) == len(vms)


async def test_after_downtime_the_planner_queues_the_catch_up_even_before_the_reaper_runs(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    make_client: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both loops start together, so either may tick first after a restart. The VM whose backup
    was running when everything stopped gets its catch-up too, and so do VMs beyond the first
    batch of overdue jobs (batches of one here)."""
    monkeypatch.setattr(reaper_module, "BATCH", 1)
    vms, proxy = await planned_night_with_a_proxy(ctx, operator, customer_of, vcsim, clock, make_client)
    assert len(vms) > 2
    planner = PlannerLoop(ctx.sessionmaker, clock)
    (running,) = await claim(proxy, capacity=1)  # the proxy went down with the service

    clock.set(MONDAY_2100 + timedelta(days=3, hours=10))
    await planner.run_once()  # the last slot's jobs are still queued or running, long overdue
    assert len(await jobs_of(operator, state="missed")) == len(vms)
    catch_up = await jobs_of(operator, state="queued", kind="backup")
    assert sorted(j["vm_id"] for j in catch_up) == sorted(vm["id"] for vm in vms)
    assert {j["trigger"] for j in catch_up} == {"catch-up"}
    assert running["vm"]["id"] in {j["vm_id"] for j in catch_up}
    await ReaperLoop(ctx.sessionmaker, clock).run_once()
    assert len(await jobs_of(operator, state="queued", kind="backup")) == len(vms)


async def planned_night_with_a_proxy(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    make_client: ClientFactory,
) -> tuple[list[dict[str, Any]], httpx.AsyncClient]:
    """Monday night's jobs planned (window 22:00 + 8 h), and a proxy of the first VM's host."""
    vms, _ = await protected_setup(operator, customer_of, vcsim, clock)
    clock.set(MONDAY_2100 + timedelta(hours=1, seconds=30))
    await PlannerLoop(ctx.sessionmaker, clock).run_once()
    proxy = make_client((await register_proxy(operator, "p", [vms[0]["host"]["id"]]))["token"])
    return vms, proxy


async def test_a_retry_the_windows_end_overtakes_is_missed_with_its_failure_as_the_cause(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    make_client: ClientFactory,
) -> None:
    vms, proxy = await planned_night_with_a_proxy(ctx, operator, customer_of, vcsim, clock, make_client)
    clock.set(MONDAY_2100 + timedelta(hours=8, minutes=58))  # the window ends at 06:00 UTC
    job_id = (await claim(proxy))[0]["job_id"]
    clock.advance(timedelta(minutes=3))  # the proxy died; its lease lapsed at 06:00
    reaper = ReaperLoop(ctx.sessionmaker, clock)
    await reaper.run_once()
    assert reaper.last_report.requeued == 1 and reaper.last_report.missed == len(vms)
    job = (await operator.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["state"] == "missed" and job["attempt"] == 1
    assert job["error"].startswith("attempt 1 of ") and "lease" in job["error"]
    assert "no retry could start before the end of its backup window" in job["error"]


async def test_a_job_whose_window_closed_is_not_claimed_before_the_reaper_ends_it(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    make_client: ClientFactory,
) -> None:
    _, proxy = await planned_night_with_a_proxy(ctx, operator, customer_of, vcsim, clock, make_client)
    clock.set(MONDAY_2100 + timedelta(hours=9, seconds=1))  # the window ended at 06:00 UTC
    assert await claim(proxy) == []
    await ReaperLoop(ctx.sessionmaker, clock).run_once()
    assert {j["state"] for j in await jobs_of(operator)} == {"missed"}


async def test_three_racing_planners_create_each_job_once(
    ctx: AppContext,
    db_url: str,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    vms, _ = await protected_setup(operator, customer_of, vcsim, clock)
    clock.set(MONDAY_2100 + timedelta(hours=1, seconds=1))
    engines = [create_engine(db_url) for _ in range(3)]  # three replicas, three connection pools
    try:
        planners = [PlannerLoop(create_sessionmaker(engine), clock) for engine in engines]
        await asyncio.gather(*(p.run_once() for p in planners))
    finally:
        for engine in engines:
            await engine.dispose()
    jobs = await jobs_of(operator)
    assert len(jobs) == len(vms)
    assert sum(p.last_report.policies_planned for p in planners) == 1
    assert sum(p.last_report.jobs_created for p in planners) == len(vms)  # an exact count on both dialects


async def test_a_vm_without_an_online_proxy_says_why_its_backup_waits(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    make_client: ClientFactory,
) -> None:
    vms, _ = await protected_setup(operator, customer_of, vcsim, clock)
    vm = vms[0]
    (job,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    watch = DispatchWatchLoop(ctx.sessionmaker, clock, ctx.settings.proxy_stale_after_s)
    await watch.run_once()
    host_name = vm["host"]["name"]
    waiting = (await operator.get(f"/api/v1/jobs/{job['id']}")).json()
    assert waiting["state"] == "queued"
    assert (
        f"no proxy for host {host_name}"
        in (await operator.get(f"/api/v1/vms/{vm['id']}")).json()["warnings"][-1]
    )

    proxy = await register_proxy(operator, "p", [vm["host"]["id"]])
    agent = make_client(proxy["token"])
    await agent.post("/api/v1/agent/heartbeat", json=BEAT)
    await watch.run_once()
    warnings = (await operator.get(f"/api/v1/vms/{vm['id']}")).json()["warnings"]
    assert not any("waiting" in w for w in warnings)
    assert [j["job_id"] for j in await claim(agent)] == [job["id"]]


async def test_concurrency_limits_per_datastore_and_host(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    make_client: ClientFactory,
) -> None:
    vms, _ = await protected_setup(operator, customer_of, vcsim, clock)
    hosts = await all_items(operator, "/api/v1/hosts")
    agent = make_client((await register_proxy(operator, "all", [h["id"] for h in hosts]))["token"])
    await operator.patch(
        f"/api/v1/proxies/{(await operator.get('/api/v1/proxies')).json()['items'][0]['id']}",
        json={"max_concurrent_jobs": 8},
    )
    await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"] for vm in vms]})
    ctx.settings.limit_per_datastore = 1  # every simulated VM lives on LocalDS_0
    assert len(await claim(agent)) == 1
    assert await claim(agent) == []
    ctx.settings.limit_per_datastore = 10
    ctx.settings.limit_per_host = 1
    more = await claim(agent)
    claimed_hosts = [vm["host"]["id"] for vm in vms if vm["id"] in {j["vm"]["id"] for j in more}]
    assert len(claimed_hosts) == len(set(claimed_hosts))  # at most one per host
    ctx.settings.limit_global = 1
    ctx.settings.limit_per_host = 10
    assert await claim(agent) == []


async def test_a_saturated_hosts_queue_does_not_hold_back_another_hosts_jobs(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim_factory: Any,
    clock: ManualClock,
    make_client: ClientFactory,
) -> None:
    server = vcsim_factory(extra_args=["-vm", "40"])
    _, _, vms = await synced_tenant(operator, customer_of, server)
    by_host: dict[str, list[dict[str, Any]]] = {}
    for vm in vms:
        by_host.setdefault(vm["host"]["id"], []).append(vm)
    busy_host, busy = max(by_host.items(), key=lambda item: len(item[1]))
    assert len(busy) > 4 * CLAIM["capacity"] + 16  # more than one window of candidates
    other = next(vm for host, host_vms in by_host.items() if host != busy_host for vm in host_vms)
    proxy = await register_proxy(
        operator, "all", [h["id"] for h in await all_items(operator, "/api/v1/hosts")]
    )
    await operator.patch(f"/api/v1/proxies/{proxy['id']}", json={"max_concurrent_jobs": 8})
    agent = make_client(proxy["token"])
    ctx.settings.limit_per_datastore = 1000
    ctx.settings.limit_per_host = 1
    assert (
        await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"] for vm in busy]})
    ).status_code == 201
    clock.advance(timedelta(seconds=1))
    assert (await operator.post("/api/v1/jobs", json={"vm_ids": [other["id"]]})).status_code == 201

    taken = [job["vm"]["id"] for job in await claim(agent)]
    assert len(taken) == 2 and other["id"] in taken  # one of the busy host's, and the other host's
    assert await claim(agent) == []


async def test_a_vm_moved_to_a_host_without_a_proxy_waits_for_one(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim_factory: Any,
    clock: ManualClock,
    make_client: ClientFactory,
) -> None:
    from pyVmomi import vim

    from tests.vadp import reference

    server = vcsim_factory()
    vms, _ = await protected_setup(operator, customer_of, server, clock)
    vm = next(v for v in vms if v["name"] == "DC0_C0_RP0_VM0")
    old_host = vm["host"]
    agent = make_client((await register_proxy(operator, "old-host-proxy", [old_host["id"]]))["token"])
    await agent.post("/api/v1/agent/heartbeat", json=BEAT)

    with reference.session(server) as si:
        machine = reference.find(si, vim.VirtualMachine, vm["name"])
        target = next(
            h
            for h in reference.objects(si, vim.HostSystem)
            if h._moId != vm["host"]["id"]
            and reference.props(si, h, "name")["name"] not in (old_host["name"], "DC0_H0")
        )
        reference.wait_for_task(si, machine.RelocateVM_Task(spec=vim.vm.RelocateSpec(host=target)))
        target_name = reference.props(si, target, "name")["name"]
    await operator.post(
        f"/api/v1/vcenters/{(await operator.get('/api/v1/vcenters')).json()['items'][0]['id']}/sync"
    )
    moved = (await operator.get(f"/api/v1/vms/{vm['id']}")).json()
    assert moved["host"]["name"] == target_name != old_host["name"]

    (job,) = (await operator.post("/api/v1/jobs", json={"vm_ids": [vm["id"]]})).json()
    await DispatchWatchLoop(ctx.sessionmaker, clock, ctx.settings.proxy_stale_after_s).run_once()
    assert (await operator.get(f"/api/v1/jobs/{job['id']}")).json()["state"] == "queued"
    assert any(
        f"no proxy for host {target_name}" in w
        for w in (await operator.get(f"/api/v1/vms/{vm['id']}")).json()["warnings"]
    )
    assert [j for j in await claim(agent) if j["job_id"] == job["id"]] == []


async def test_a_large_tick_refreshes_the_queue_statistics(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After queueing many jobs the planner re-samples jobs.state (PostgreSQL's ANALYZE), so
    that claims stop planning as if nothing were queued; a tick that queues few does not."""
    vms, _ = await protected_setup(operator, customer_of, vcsim, clock)
    postgres = ctx.engine.dialect.name == "postgresql"

    async def analyses() -> int:
        if not postgres:
            return 0
        async with ctx.engine.connect() as conn:
            count = await conn.scalar(
                text("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'jobs'")
            )
        return int(count or 0)

    monkeypatch.setattr(planner_module, "STATISTICS_REFRESH_MIN_JOBS", len(vms))
    planner = PlannerLoop(ctx.sessionmaker, clock)
    before = await analyses()
    clock.set(MONDAY_2100 + timedelta(hours=1))
    await planner.run_once()
    assert planner.last_report.jobs_created == len(vms)
    assert await analyses() == before + (1 if postgres else 0)

    await planner.run_once()  # nothing new to queue: no refresh
    assert planner.last_report.jobs_created == 0
    assert await analyses() == before + (1 if postgres else 0)


async def test_a_window_sent_in_part_is_stored_whole_and_planned(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """``{"window": {"start": ...}}`` gets the default duration, in the catalog as in a read: the
    planner reads the row, and a half window stopped every policy's planning."""
    vms, policy = await protected_setup(operator, customer_of, vcsim, clock)
    changed = await operator.patch(
        f"/api/v1/policies/{policy['id']}",
        json={"window": {"start": "21:30"}, "schedule": {"type": "weekly", "times": ["21:30"]}},
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["window"] == {"start": "21:30", "duration_minutes": 480}
    async with ctx.sessionmaker() as session:
        stored = await session.get(Policy, uuid.UUID(policy["id"]))
        assert stored is not None and stored.backup_window == {"start": "21:30", "duration_minutes": 480}
    clock.set(MONDAY_2100 + timedelta(minutes=31))
    await PlannerLoop(ctx.sessionmaker, clock).run_once()
    assert len(await jobs_of(operator)) == len(vms)
    async with ctx.sessionmaker() as session:
        ends = set((await session.execute(select(Job.window_end))).scalars())
    assert ends == {MONDAY_2100 + timedelta(minutes=30, hours=8)}


async def test_a_policy_the_planner_cannot_read_does_not_stop_the_others(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock.set(MONDAY_2100)
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    nightly = {"schedule": {"type": "weekly", "times": ["22:00"]}}
    broken = await create_policy(
        operator, tenant_id, name="broken", selection={"vm_ids": [vms[0]["id"]]}, **nightly
    )
    await create_policy(operator, tenant_id, name="healthy", selection={"vm_ids": [vms[1]["id"]]}, **nightly)
    # A row no version of the API stores now (an earlier one could store half a window).
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Policy).where(Policy.id == uuid.UUID(broken["id"])).values(backup_window={"start": "x"})
        )
    clock.set(MONDAY_2100 + timedelta(hours=1, seconds=30))
    planner = PlannerLoop(ctx.sessionmaker, clock)
    await planner.run_once()
    assert [j["vm_id"] for j in await jobs_of(operator)] == [vms[1]["id"]]
    assert planner.last_report.policies_failed == 1 and planner.last_report.policies_planned == 1
    assert f"cannot plan policy 'broken' ({broken['id']})" in caplog.text
