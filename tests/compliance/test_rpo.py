"""RPO breaches recorded as time moves and restore points arrive; the RPO report."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.clock import ManualClock
from app.context import AppContext
from app.jobs.models import Job
from tests.api.test_policies import create_policy, synced_tenant, tag_vm
from tests.compliance.helpers import (
    add_job,
    add_point,
    breaches,
    heartbeat,
    hours,
    online_proxy,
    protected_vm,
    rpo_recorder,
    set_datastore_free,
    table_rows,
)
from tests.support.app import CustomerFactory
from tests.support.sql import statements_sent
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory

pytestmark = pytest.mark.vcsim

RPO = "/api/v1/compliance/rpo"


def iso(instant: object) -> str:
    return instant.isoformat().replace("+00:00", "Z")  # type: ignore[attr-defined]


async def vm_row(client: httpx.AsyncClient, vm_id: str, **params: str) -> dict[str, object]:
    response = await client.get(RPO, params={"vm_id": vm_id, **params})
    assert response.status_code == 200, response.text
    (row,) = response.json()["items"]
    return row  # type: ignore[no-any-return]


async def test_breach_opens_and_closes_as_time_moves_and_percent_is_over_protected_time(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    t0 = clock.now()
    customer, _, vm, policy = await protected_vm(operator, customer_of, vcsim)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])
    recorder = rpo_recorder(ctx)
    clock.advance(hours(1))
    await add_point(ctx, vm["id"])  # at t0+1h
    clock.advance(hours(1))
    await recorder.run_once()
    assert await breaches(ctx) == []
    row = await vm_row(customer, vm["id"])
    assert row["status"] == "compliant" and row["policy_id"] == policy["id"] and row["rpo_hours"] == 24
    assert row["protected_since"] == iso(t0) and row["due_at"] == iso(t0 + hours(25))

    # 80% of the RPO (19.2 h) after the point: at risk just past it.
    clock.set(t0 + hours(1) + hours(19.2))
    assert (await vm_row(customer, vm["id"]))["status"] == "compliant"
    clock.advance(timedelta(minutes=1))
    assert (await vm_row(customer, vm["id"]))["status"] == "at_risk"
    at_risk = (await customer.get(RPO, params={"status": "at_risk"})).json()
    assert [r["vm_id"] for r in at_risk["items"]] == [vm["id"]]
    assert (await customer.get(RPO, params={"status": "breached"})).json()["total"] == 0

    # Past the RPO: the recorder opens a breach that started when the point got too old.
    clock.set(t0 + hours(27))
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.started_at == t0 + hours(25) and breach.ended_at is None
    assert breach.cause == "other" and breach.rpo_hours == 24
    row = await vm_row(customer, vm["id"])
    assert row["status"] == "breached" and row["open_breach"]["started_at"] == iso(t0 + hours(25))

    # A new point taken at t0+28h closes it at that instant.
    clock.set(t0 + hours(28))
    await add_point(ctx, vm["id"])
    clock.set(t0 + hours(29))
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.ended_at == t0 + hours(28) and breach.resolution == "backed_up"

    # Over [t0-10h, t0+29h]: protected 29 h (not 39: before protection does not count), 3 h breached.
    row = await vm_row(customer, vm["id"], **{"from": iso(t0 - hours(10)), "to": iso(t0 + hours(29))})
    assert row["protected_s"] == pytest.approx(29 * 3600, abs=1)
    assert row["breached_s"] == pytest.approx(3 * 3600, abs=1)
    assert row["compliant_percent"] == pytest.approx(100 * 26 / 29, abs=0.001)
    assert row["breaches_in_period"] == 1 and row["breaches"][0]["duration_s"] == pytest.approx(3 * 3600)
    # A period that clips the breach: [t0+26h, t0+29h] is 3 h protected, 2 h of them breached.
    row = await vm_row(customer, vm["id"], **{"from": iso(t0 + hours(26)), "to": iso(t0 + hours(29))})
    assert row["compliant_percent"] == pytest.approx(100 / 3, abs=0.001)
    # A period before the breach has none.
    row = await vm_row(customer, vm["id"], **{"from": iso(t0), "to": iso(t0 + hours(24))})
    assert row["breaches_in_period"] == 0 and row["compliant_percent"] == 100.0
    bad = await customer.get(RPO, params={"from": iso(t0 + hours(2)), "to": iso(t0 + hours(1))})
    assert bad.status_code == 422

    # A second breach, still open: the period figures count it up to now.
    clock.set(t0 + hours(28 + 24 + 2))  # due at t0+52h
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    row = await vm_row(customer, vm["id"], **{"from": iso(t0 + hours(28)), "to": iso(t0 + hours(60))})
    assert row["breached_s"] == pytest.approx(2 * 3600, abs=1)  # t0+52h..now (t0+54h)
    assert row["protected_s"] == pytest.approx(26 * 3600, abs=1)
    listed = (await customer.get(f"{RPO}/breaches", params={"from": iso(t0)})).json()
    assert [b["ended_at"] is None for b in listed["items"]] == [True, False]
    assert (await customer.get(f"{RPO}/breaches", params={"open": "true"})).json()["total"] == 1


async def test_never_backed_up_vm_has_one_rpo_then_breaches(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    t0 = clock.now()
    customer, _, vm, _ = await protected_vm(operator, customer_of, vcsim, rpo_hours=12)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])
    recorder = rpo_recorder(ctx)
    clock.set(t0 + hours(11))
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    assert await breaches(ctx) == []
    row = await vm_row(customer, vm["id"])
    assert row["status"] == "at_risk" and row["latest_restore_point_at"] is None
    clock.set(t0 + hours(13))
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.started_at == t0 + hours(12)
    assert breach.cause == "not_yet_backed_up" and breach.causes == ["not_yet_backed_up"]
    # The first backup ends it.
    await add_point(ctx, vm["id"])
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.ended_at == t0 + hours(13) and breach.resolution == "backed_up"


async def test_causes_follow_the_evidence_while_one_breach_stays_open(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    t0 = clock.now()
    _, _, vm, _ = await protected_vm(operator, customer_of, vcsim)
    await add_point(ctx, vm["id"])
    recorder = rpo_recorder(ctx)
    clock.set(t0 + hours(25))

    # No online proxy for the VM's host.
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.cause == "no_proxy" and breach.started_at == t0 + hours(24)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])

    steps = [
        ({"state": "failed", "error": "vCenter went away"}, "failed_jobs"),
        ({"state": "skipped", "error": "datastore ds has 4.0% free (below 10%)"}, "datastore_space"),
        ({"state": "missed", "error": "not started by the end of its backup window"}, "missed_window"),
        ({"state": "queued", "waiting_reason": "no proxy for host DC0_H0"}, "no_proxy"),
    ]
    for job, expected in steps:
        clock.advance(timedelta(minutes=10))
        await heartbeat(ctx, proxy)
        queued = await add_job(ctx, vm["id"], **job)
        await recorder.run_once()
        (breach,) = await breaches(ctx)
        assert breach.cause == expected, (job, breach.detail)
        assert breach.ended_at is None and breach.started_at == t0 + hours(24)

    # The queued job ends cancelled: no job evidence; a datastore below 10% free explains it.
    async with ctx.sessionmaker.begin() as session:
        await session.execute(update(Job).where(Job.id == queued.id).values(state="cancelled"))
    name = await set_datastore_free(ctx, vm["id"], 5.0, "critical")
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.cause == "datastore_space" and name in (breach.detail or "")
    assert breach.causes == ["no_proxy", "failed_jobs", "datastore_space", "missed_window"]


async def test_space_requirement_names_the_datastore(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
) -> None:
    customer, _, vm, _ = await protected_vm(operator, customer_of, vcsim)
    row = await vm_row(customer, vm["id"])
    assert row["below_space_requirement"] == 0 and row["datastores_below_requirement"] == []
    name = await set_datastore_free(ctx, vm["id"], 12.5, "warning")
    row = await vm_row(customer, vm["id"])
    assert row["below_space_requirement"] == 1
    first = row["datastores_below_requirement"][0]
    assert (first["name"], first["free_percent"], first["space_status"]) == (name, 12.5, "warning")
    summary = (await customer.get("/api/v1/compliance/summary")).json()
    assert summary["rpo"]["below_space_requirement"] == 1


async def test_unprotecting_ends_span_and_breach_and_groups_aggregate(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    t0 = clock.now()
    customer, tenant_id, vm, policy = await protected_vm(operator, customer_of, vcsim)
    recorder = rpo_recorder(ctx)
    clock.set(t0 + hours(30))
    await recorder.run_once()
    assert len(await breaches(ctx)) == 1

    by_policy = (await operator.get(RPO, params={"group_by": "policy"})).json()
    (group,) = by_policy["items"]
    assert group["policy_id"] == policy["id"] and group["vm_count"] == 1 and group["breached"] == 1
    assert group["open_breaches"] == 1 and group["vm_id"] is None
    by_tenant = (await operator.get(RPO, params={"group_by": "tenant"})).json()
    assert [g["tenant_id"] for g in by_tenant["items"]] == [str(tenant_id)]

    clock.set(t0 + hours(31))
    patched = await operator.patch(f"/api/v1/policies/{policy['id']}", json={"enabled": False})
    assert patched.status_code == 200, patched.text
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert breach.ended_at == t0 + hours(31) and breach.resolution == "unprotected"
    # Still reported for the period it was protected in, as unprotected now.
    row = await vm_row(customer, vm["id"], **{"from": iso(t0), "to": iso(t0 + hours(40))})
    assert row["status"] == "unprotected"
    assert row["protected_s"] == pytest.approx(31 * 3600, abs=1)
    assert row["breached_s"] == pytest.approx(7 * 3600, abs=1)


async def test_recorder_is_idempotent_and_racing_recorders_open_one_breach(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    t0 = clock.now()
    await protected_vm(operator, customer_of, vcsim)
    clock.set(t0 + hours(30))
    first, second = rpo_recorder(ctx), rpo_recorder(ctx)
    await asyncio.gather(first.run_once(), second.run_once(), rpo_recorder(ctx).run_once())
    rows = await table_rows(ctx)
    assert len(rows["rpo_breaches"]) == 1 and len(rows["rpo_protection_spans"]) == 1
    await first.run_once()
    await second.run_once()
    assert await table_rows(ctx) == rows
    assert first.last_report.breaches_opened == 0 and first.last_report.open_breaches == 1


async def test_report_queries_do_not_grow_with_the_number_of_vms(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    one = await create_policy(operator, tenant_id, name="one", selection={"vm_ids": [vms[0]["id"]]})
    await create_policy(operator, tenant_id, name="rest", selection={"vm_ids": [v["id"] for v in vms[1:]]})
    assert len(vms) >= 3
    clock.advance(hours(30))
    await rpo_recorder(ctx).run_once()
    # A warm-up request: the key's first use of the minute records it (one UPDATE), later ones do not.
    await operator.get(RPO)
    with statements_sent(ctx.engine) as statements:
        small = await operator.get(RPO, params={"policy_id": one["id"]})
        n_small = len(statements)
        statements.clear()
        large = await operator.get(RPO)
        n_large = len(statements)
    assert small.json()["total"] == 1 and large.json()["total"] == len(vms)
    assert n_small == n_large


async def test_pages_computed_in_sql_match_the_whole_report(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """The default page is chosen in SQL and only its VMs computed; a status filter still computes
    every VM. Both must agree, page by page, on rows, order and total."""
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    await create_policy(operator, tenant_id, name="all", selection={"vm_ids": [v["id"] for v in vms]})
    t0 = clock.now()
    clock.set(t0 + hours(30))
    await add_point(ctx, vms[0]["id"], t0 + hours(29))
    await rpo_recorder(ctx).run_once()

    whole = []
    for status in ("compliant", "at_risk", "breached", "unprotected"):
        whole += (await operator.get(RPO, params={"status": status, "limit": 500})).json()["items"]
    whole.sort(key=lambda r: (r["vm_name"], r["vm_id"]))
    assert len(whole) >= 3 and {r["status"] for r in whole} >= {"compliant", "breached"}

    paged, offset = [], 0
    while True:
        body = (await operator.get(RPO, params={"limit": 2, "offset": offset})).json()
        assert body["total"] == len(whole)
        if not body["items"]:
            break
        paged += body["items"]
        offset += 2
    assert paged == whole


async def test_offsite_rpo_is_reported_apart(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """With offsite copies, each VM row also says how old its newest offsite-copied point is: the
    RPO that holds if the onsite repository is lost."""
    from app.restore_points.models import RestorePoint

    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    await create_policy(
        operator,
        tenant_id,
        name="copied",
        selection={"vm_ids": [vms[0]["id"], vms[1]["id"]]},
        offsite_copy=True,
    )
    await create_policy(operator, tenant_id, name="local", selection={"vm_ids": [vms[2]["id"]]})
    t0 = clock.now()
    clock.set(t0 + hours(30))
    old = await add_point(ctx, vms[0]["id"], t0 + hours(8))  # copied offsite
    await add_point(ctx, vms[0]["id"], t0 + hours(29))  # not copied yet
    await add_point(ctx, vms[1]["id"], t0 + hours(29))
    await add_point(ctx, vms[2]["id"], t0 + hours(29))
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(RestorePoint).where(RestorePoint.id == old).values(copy_status="offsite")
        )
    await rpo_recorder(ctx).run_once()

    rows = {r["vm_id"]: r for r in (await operator.get(RPO, params={"limit": 500})).json()["items"]}
    first = rows[vms[0]["id"]]
    assert first["status"] == "compliant"  # 1 h old onsite
    assert first["offsite"]["status"] == "at_risk"  # 22 h old offsite, above 80% of 24 h
    assert first["offsite"]["age_hours"] == 22.0
    assert rows[vms[1]["id"]]["offsite"] == {
        "latest_copied_point_at": None,
        "age_hours": None,
        "status": "not_copied",
    }
    assert rows[vms[2]["id"]]["offsite"] is None  # its policy makes no offsite copies


async def test_groups_aggregated_in_sql_add_up_the_vm_rows(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """Grouped reports are computed by the database, VM rows in Python: every figure of a group
    must be the sum of its VMs' rows, with and without a status filter."""
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    assert len(vms) >= 4
    one = await create_policy(operator, tenant_id, name="one", selection={"vm_ids": [vms[0]["id"]]})
    rest = await create_policy(
        operator, tenant_id, name="rest", selection={"vm_ids": [v["id"] for v in vms[1:]]}
    )
    t0 = clock.now()
    clock.set(t0 + hours(20))
    await rpo_recorder(ctx).run_once()
    clock.set(t0 + hours(30))
    await add_point(ctx, vms[0]["id"], t0 + hours(29))  # compliant
    await add_point(ctx, vms[1]["id"], t0 + hours(10))  # 20 h old: at risk (over 80% of 24 h)
    await add_point(ctx, vms[2]["id"], t0 + hours(2))  # breached, like the VMs never backed up
    await set_datastore_free(ctx, vms[3]["id"], 12.5, "warning")
    await rpo_recorder(ctx).run_once()

    vm_rows = (await operator.get(RPO, params={"limit": 500})).json()["items"]
    assert {r["status"] for r in vm_rows} >= {"compliant", "at_risk", "breached"}
    figures = (
        "vm_count",
        "compliant",
        "at_risk",
        "breached",
        "unprotected",
        "breaches_in_period",
        "open_breaches",
        "below_space_requirement",
    )

    def expected(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for row in rows:
            group = out.setdefault(str(row[key]), dict.fromkeys((*figures, "protected_s", "breached_s"), 0))
            for name in (*figures, "protected_s", "breached_s"):
                group[name] += row[name]
        return out

    for status in (None, "compliant", "at_risk", "breached"):
        params = {"status": status} if status else {}
        chosen = [r for r in vm_rows if status is None or r["status"] == status]
        for group_by, key in (("policy", "policy_id"), ("tenant", "tenant_id")):
            body = (await operator.get(RPO, params={"group_by": group_by, **params})).json()
            got = {str(g[key]): g for g in body["items"]}
            want = expected(chosen, key)
            assert set(got) == set(want) and body["total"] == len(want), (group_by, status)
            for group_key, sums in want.items():
                for name in figures:
                    assert got[group_key][name] == sums[name], (group_by, status, name)
                for name in ("protected_s", "breached_s"):
                    assert got[group_key][name] == pytest.approx(sums[name], abs=0.01)
    by_policy = (await operator.get(RPO, params={"group_by": "policy"})).json()["items"]
    assert [g["policy_name"] for g in by_policy] == ["one", "rest"]
    assert by_policy[0]["policy_id"] == one["id"] and by_policy[1]["policy_id"] == rest["id"]
    assert by_policy[1]["below_space_requirement"] >= 1 and by_policy[1]["open_breaches"] >= 1

    summary = (await operator.get("/api/v1/compliance/summary")).json()
    for name in figures:
        assert summary["rpo"][name] == sum(r[name] for r in vm_rows), name
    causes: dict[str, int] = {}
    for row in vm_rows:
        if row["open_breach"] is not None:
            causes[row["open_breach"]["cause"]] = causes.get(row["open_breach"]["cause"], 0) + 1
    assert summary["open_breaches_by_cause"] == causes and causes


async def test_a_breach_stays_open_until_a_point_newer_than_its_anchor_lands(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """The point a breach is anchored on (due = point + RPO) never ends it: the next one does. On
    SQLite the check compared floating-point epochs, and with a 4 h RPO the anchor point itself
    passed as newer about half the time: the breach was then closed with no length."""
    _, _, vm, _ = await protected_vm(operator, customer_of, vcsim, rpo_hours=4)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])
    recorder = rpo_recorder(ctx)
    start = clock.now()
    for i in range(8):
        taken = start + hours(10 * i) + timedelta(seconds=i * 7919, microseconds=i * 104_729)
        clock.set(taken)
        await add_point(ctx, vm["id"])
        clock.set(taken + hours(1))
        await recorder.run_once()  # compliant again: the previous breach ends, at this point
        closed = sorted(
            (b for b in await breaches(ctx) if b.ended_at is not None), key=lambda b: b.started_at
        )
        assert len(closed) == i and all(b.ended_at > b.started_at for b in closed), i
        if closed:
            assert closed[-1].ended_at == taken, i
        clock.set(taken + hours(5))
        await heartbeat(ctx, proxy)
        await recorder.run_once()
        await recorder.run_once()  # a second pass must not close it: no newer point
        opened = [b for b in await breaches(ctx) if b.ended_at is None]
        assert [b.started_at for b in opened] == [taken + hours(4)], i


async def test_a_recorder_that_was_down_ends_the_old_breach_at_the_point_that_ended_it(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """A breach is open; a point lands; the recorder is down until the VM is overdue again. The
    old breach ends at that point and a new one starts at its own due time: the compliant hours
    between them are not counted as breached."""
    _, _, vm, _ = await protected_vm(operator, customer_of, vcsim, rpo_hours=4)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])
    recorder = rpo_recorder(ctx)
    t = clock.now()
    await add_point(ctx, vm["id"])
    clock.set(t + hours(5))
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    clock.set(t + hours(6))
    await add_point(ctx, vm["id"])  # the recorder does not run now...
    clock.set(t + hours(12))  # ...until the VM is overdue again (due t+10h)
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    found = sorted(await breaches(ctx), key=lambda b: b.started_at)
    expected = [(t + hours(4), t + hours(6)), (t + hours(10), None)]
    assert [(b.started_at, b.ended_at) for b in found] == expected


async def test_a_vm_tagged_into_a_policy_months_later_gets_its_rpo_from_then(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim_factory: VcsimFactory,
    clock: ManualClock,
) -> None:
    """Its protection began when the tag came (an inventory sync), not when the VM appeared or the
    policy was last edited: no breach backdated by a month, and the RPO's grace from the tag on."""
    server = vcsim_factory()
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, server)
    await create_policy(operator, tenant_id, name="gold", selection={"tags": ["backup:gold"]})
    clock.advance(timedelta(days=30))
    vm_moid = tag_vm(server, "DC0_H0_VM1", "backup", "gold")
    (vm,) = [v for v in vms if v["moid"] == vm_moid]
    listed = await operator.get("/api/v1/vcenters", params={"tenant_id": str(tenant_id)})
    vcenter = listed.json()["items"][0]
    assert (await operator.post(f"/api/v1/vcenters/{vcenter['id']}/sync")).status_code == 200
    tagged_at = clock.now()
    clock.advance(hours(1))
    await rpo_recorder(ctx).run_once()
    assert await breaches(ctx) == []
    row = await vm_row(customer, vm["id"])
    assert row["status"] == "compliant" and row["protected_since"] == iso(tagged_at)


async def test_a_lowered_rpo_breaches_from_the_change_not_before_it(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """24 h lowered to 4 h with a 10-hour-old point: the VM met the RPO it had until the change,
    so its breach starts at the change (the new due time, 6 h earlier, is not counted)."""
    _, _, vm, policy = await protected_vm(operator, customer_of, vcsim, rpo_hours=24)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])
    recorder = rpo_recorder(ctx)
    t = clock.now()
    minute = timedelta(minutes=1)
    await add_point(ctx, vm["id"])
    clock.set(t + hours(10))
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    assert await breaches(ctx) == []
    changed = await operator.patch(f"/api/v1/policies/{policy['id']}", json={"rpo_hours": 4})
    assert changed.status_code == 200, changed.text
    clock.set(t + hours(10) + minute)
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert (breach.started_at, breach.ended_at, breach.rpo_hours) == (t + hours(10), None, 4)
    # An edit of something else, made after the next due time while the recorder was down,
    # does not move the start of the next breach.
    await add_point(ctx, vm["id"])  # due again at t + 14 h 1 min
    clock.set(t + hours(15))
    edited = await operator.patch(f"/api/v1/policies/{policy['id']}", json={"description": "x"})
    assert edited.status_code == 200, edited.text
    clock.set(t + hours(16))
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    later = sorted(await breaches(ctx), key=lambda b: b.started_at)
    assert [(b.started_at, b.ended_at) for b in later] == [
        (t + hours(10), t + hours(10) + minute),
        (t + hours(14) + minute, None),
    ]


async def test_application_points_do_not_keep_a_vm_within_its_rpo(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    """Hourly database dumps while the image backups fail: the VM is breached from its image's due
    time, and the breach ends with the next image point, not with a dump."""
    from app.restore_points.models import RestorePoint

    customer, _, vm, _ = await protected_vm(operator, customer_of, vcsim, rpo_hours=4)
    proxy = await online_proxy(operator, ctx, vm["host"]["id"])
    recorder = rpo_recorder(ctx)
    t = clock.now()
    await add_point(ctx, vm["id"])
    dumps = []
    for hour in range(1, 7):
        clock.set(t + hours(hour))
        dumps.append(await add_point(ctx, vm["id"]))
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(RestorePoint).where(RestorePoint.id.in_(dumps)).values(kind="application")
        )
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    (breach,) = await breaches(ctx)
    assert (breach.started_at, breach.ended_at) == (t + hours(4), None)
    row = await vm_row(customer, vm["id"])
    assert row["status"] == "breached" and row["latest_restore_point_at"] == iso(t)

    clock.set(t + hours(7))
    await add_point(ctx, vm["id"])  # an image point ends it
    await heartbeat(ctx, proxy)
    await recorder.run_once()
    (ended,) = await breaches(ctx)
    assert ended.ended_at == t + hours(7)
