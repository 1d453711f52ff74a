"""Customers ask for protection changes; operators approve (applied at once) or reject with a reason."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from sqlalchemy import update

from app.changes.models import ChangeRequest
from app.context import AppContext
from tests.api.test_policies import create_policy, protection, synced_tenant
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim
URL = "/api/v1/change-requests"


async def test_requests_are_applied_on_approval_and_history_stays(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    policy = await create_policy(operator, tenant_id, name="gold", selection={"vm_ids": [vms[0]["id"]]})

    # Customers cannot edit policies; they ask.
    assert (
        await customer.patch(f"/api/v1/policies/{policy['id']}", json={"rpo_hours": 12})
    ).status_code == 403
    asked = await customer.post(
        URL,
        json={
            "kind": "policy_update",
            "policy_id": policy["id"],
            "changes": {"rpo_hours": 12},
            "comment": "tighter",
        },
    )
    assert asked.status_code == 201, asked.text
    update = asked.json()
    assert update["state"] == "pending" and update["payload"] == {
        "policy_id": policy["id"],
        "changes": {"rpo_hours": 12},
    }
    protect = (
        await customer.post(
            URL, json={"kind": "protect", "policy_id": policy["id"], "vm_ids": [vms[1]["id"]]}
        )
    ).json()
    new = (
        await customer.post(
            URL,
            json={
                "kind": "policy_create",
                "policy": {"name": "silver", "rpo_hours": 48, "selection": {"vm_ids": [vms[2]["id"]]}},
            },
        )
    ).json()
    assert (await protection(customer, vms[1]["id"]))["status"] == "unprotected"  # nothing changes yet

    assert (await customer.post(f"{URL}/{update['id']}/approve")).status_code == 403
    for request in (update, protect, new):
        approved = await operator.post(f"{URL}/{request['id']}/approve")
        assert approved.status_code == 200, approved.text
        assert approved.json()["state"] == "approved" and approved.json()["decided_at"]
    assert (await operator.get(f"/api/v1/policies/{policy['id']}")).json()["rpo_hours"] == 12
    assert (await protection(customer, vms[1]["id"]))["policy_name"] == "gold"
    assert (await protection(customer, vms[2]["id"]))["policy_name"] == "silver"
    assert (await operator.post(f"{URL}/{update['id']}/approve")).status_code == 409  # decided once

    unprotect = (
        await customer.post(
            URL, json={"kind": "unprotect", "policy_id": policy["id"], "vm_ids": [vms[1]["id"]]}
        )
    ).json()
    assert (await operator.post(f"{URL}/{unprotect['id']}/approve")).status_code == 200
    assert (await protection(customer, vms[1]["id"]))["status"] != "protected"

    history = (await customer.get(URL)).json()
    assert history["total"] == 4 and {r["state"] for r in history["items"]} == {"approved"}


async def test_rejections_cancellations_and_validation(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    other, _, other_vms = await synced_tenant(operator, customer_of, vcsim, "Other")
    policy = await create_policy(operator, tenant_id, name="gold", selection={"vm_ids": [vms[0]["id"]]})
    change = {"kind": "policy_update", "policy_id": policy["id"], "changes": {"rpo_hours": 6}}

    request = (await customer.post(URL, json=change)).json()
    no_reason = await operator.post(f"{URL}/{request['id']}/reject", json={})
    assert no_reason.status_code == 422
    rejected = await operator.post(
        f"{URL}/{request['id']}/reject", json={"reason": "6 h needs a gold+ contract"}
    )
    assert rejected.json()["state"] == "rejected" and rejected.json()["reason"].startswith("6 h")
    assert (await operator.get(f"/api/v1/policies/{policy['id']}")).json()["rpo_hours"] == 24

    mine = (await customer.post(URL, json=change)).json()
    assert (await other.post(f"{URL}/{mine['id']}/cancel")).status_code == 404  # another tenant's
    assert (await customer.post(f"{URL}/{mine['id']}/cancel")).json()["state"] == "cancelled"

    # Invalid input changes nothing: unknown policy (another tenant's), foreign VMs, bad fields.
    before = (await customer.get(URL)).json()["total"]
    assert (await other.post(URL, json=change)).status_code == 422
    foreign = await customer.post(
        URL, json={"kind": "protect", "policy_id": policy["id"], "vm_ids": [other_vms[0]["id"]]}
    )
    assert foreign.status_code == 422 and foreign.json()["errors"][0]["field"] == "body.vm_ids.0"
    foreign_selection = {"vm_ids": [vms[1]["id"], other_vms[0]["id"]]}
    for body, field in (
        ({**change, "changes": {"selection": foreign_selection}}, "body.changes.selection.vm_ids.1"),
        ({**change, "changes": {"exclusions": foreign_selection}}, "body.changes.exclusions.vm_ids.1"),
        (
            {"kind": "policy_create", "policy": {"name": "x", "selection": foreign_selection}},
            "body.policy.selection.vm_ids.1",
        ),
    ):
        named = await customer.post(URL, json=body)
        assert named.status_code == 422 and named.json()["errors"][0]["field"] == field, named.text
    bad = await customer.post(URL, json={**change, "changes": {"rpo_hours": 0}})
    assert bad.status_code == 422
    # A new policy whose schedule falls outside its window (default 22:00 + 8 h) is refused when
    # filed, as a policy created directly is, not when an operator approves it.
    noon = {"type": "weekly", "times": ["12:00"]}
    outside = {"kind": "policy_create", "policy": {"name": "x", "schedule": noon}}
    refused_new = await customer.post(URL, json=outside)
    assert refused_new.status_code == 422 and "window" in refused_new.text, refused_new.text
    assert (await customer.get(URL)).json()["total"] == before

    # An approval that no longer applies (the policy's name is taken meanwhile) changes nothing.
    await create_policy(operator, tenant_id, name="silver")
    rename = (await customer.post(URL, json={**change, "changes": {"name": "silver"}})).json()
    refused = await operator.post(f"{URL}/{rename['id']}/approve")
    assert refused.status_code == 409 and "Reject it instead" in refused.json()["detail"]
    assert (await customer.get(f"{URL}/{rename['id']}")).json()["state"] == "pending"

    # A request stored by an earlier version that checked less is refused at approval (409),
    # not answered with a 500.
    stored = (await customer.post(URL, json={"kind": "policy_create", "policy": {"name": "y"}})).json()
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(ChangeRequest)
            .where(ChangeRequest.id == uuid.UUID(stored["id"]))
            .values(payload={"policy": outside["policy"]})
        )
    late = await operator.post(f"{URL}/{stored['id']}/approve")
    assert late.status_code == 409 and "Reject it instead" in late.json()["detail"], late.text
    assert (await customer.get(f"{URL}/{stored['id']}")).json()["state"] == "pending"


async def test_an_operator_request_for_a_tenant_that_does_not_exist_is_422(
    operator: httpx.AsyncClient,
) -> None:
    asked = await operator.post(
        URL,
        params={"tenant_id": str(uuid.uuid4())},
        json={"kind": "policy_create", "policy": {"name": "silver"}},
    )
    assert asked.status_code == 422, asked.text
    assert (
        asked.json()["errors"][0]["field"] == "query.tenant_id" and "does not exist" in asked.json()["detail"]
    )
    assert (await operator.get(URL)).json()["total"] == 0


async def test_two_operators_deciding_at_once_take_turns(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    policy = await create_policy(operator, tenant_id, name="gold", selection={"vm_ids": [vms[0]["id"]]})
    for rival in ("approve", "reject"):
        asked = await customer.post(
            URL, json={"kind": "policy_update", "policy_id": policy["id"], "changes": {"rpo_hours": 12}}
        )
        request = asked.json()
        first, second = await asyncio.gather(
            operator.post(f"{URL}/{request['id']}/approve"),
            operator.post(f"{URL}/{request['id']}/{rival}", json={"reason": "change freeze"}),
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409], (first.text, second.text)
        final = (await operator.get(f"{URL}/{request['id']}")).json()
        applied = (await operator.get(f"/api/v1/policies/{policy['id']}")).json()["rpo_hours"] == 12
        assert applied == (final["state"] == "approved")
        if applied:
            reset = await operator.patch(f"/api/v1/policies/{policy['id']}", json={"rpo_hours": 24})
            assert reset.status_code == 200


async def test_two_protect_approvals_at_once_keep_both_vms(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    """PostgreSQL: two approvals add a VM each to one policy's selection. The second waits for the
    first's lock and starts from what it wrote; unlocked, both read the old list and the second
    write dropped the first VM. (SQLite runs the two transactions one after the other.)"""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writing transaction at a time")
    from sqlalchemy import text

    from app.auth.principal import Principal, Role
    from app.changes.service import ChangeRequestService

    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    policy = await create_policy(operator, tenant_id, name="gold", selection={"vm_ids": [vms[0]["id"]]})
    requests = []
    for vm in vms[1:3]:
        asked = await customer.post(
            URL, json={"kind": "protect", "policy_id": policy["id"], "vm_ids": [vm["id"]]}
        )
        assert asked.status_code == 201, asked.text
        requests.append(uuid.UUID(asked.json()["id"]))
    operator_principal = Principal(key_id=None, role=Role.OPERATOR, tenant_id=None)

    async with ctx.sessionmaker.begin() as first:
        await ChangeRequestService(first, ctx.clock).approve(operator_principal, requests[0], None)
        await first.flush()

        async def approve_second() -> None:
            async with ctx.sessionmaker.begin() as second:
                await ChangeRequestService(second, ctx.clock).approve(operator_principal, requests[1], None)

        racing = asyncio.create_task(approve_second())
        # Until the second waits on a row lock the first holds (the policy, with the fix).
        async with ctx.engine.connect() as watcher:
            for _ in range(600):
                waiting = await watcher.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND datname = current_database()"
                    )
                )
                if waiting or racing.done():
                    break
                await asyncio.sleep(0.05)
        assert not racing.done()
    await racing
    selection = (await operator.get(f"/api/v1/policies/{policy['id']}")).json()["selection"]["vm_ids"]
    assert sorted(selection) == sorted(vm["id"] for vm in vms[:3])
