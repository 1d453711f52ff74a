"""Protection policies: validation, selection by id/folder/tag, exclusions and conflicts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pyVmomi import vim

from app.clock import ManualClock
from tests.api.test_inventory import all_items
from tests.api.test_vcenters import register
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp.test_tags import attach, moids, new_category, new_tag

pytestmark = pytest.mark.vcsim


async def synced_tenant(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, server: VcsimServer, name: str = "Acme"
) -> tuple[httpx.AsyncClient, uuid.UUID, list[dict[str, Any]]]:
    customer, tenant_id = await customer_of(name)
    vc = await register(operator, tenant_id, server.url, name=f"{name}-vc")
    assert (await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")).status_code == 200
    vms = await all_items(operator, "/api/v1/vms", tenant_id=str(tenant_id))
    return customer, tenant_id, sorted(vms, key=lambda vm: vm["name"])


async def create_policy(operator: httpx.AsyncClient, tenant_id: uuid.UUID, **fields: Any) -> dict[str, Any]:
    response = await operator.post("/api/v1/policies", json={"tenant_id": str(tenant_id), **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def protection(client: httpx.AsyncClient, vm_id: str) -> dict[str, Any]:
    return (await client.get(f"/api/v1/vms/{vm_id}")).json()["protection"]


async def test_policy_defaults_and_next_run(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, clock: ManualClock
) -> None:
    _, tenant_id = await customer_of("Acme")
    clock.set(datetime(2026, 3, 28, 12, 0, tzinfo=UTC))  # a Saturday, the day before DST in Berlin
    policy = await create_policy(
        operator,
        tenant_id,
        name="gold",
        timezone="Europe/Berlin",
        schedule={"type": "weekly", "times": ["23:00"], "days": ["sun"]},
    )
    assert policy["rpo_hours"] == 24
    assert policy["rto_hours"] == 12
    assert policy["retention"] == {"daily": 7, "weekly": 4, "monthly": 6}
    assert policy["offsite_copy"] is False
    assert policy["application_aware"] is False
    assert policy["window"] == {"start": "22:00", "duration_minutes": 480}
    # Sunday 29 March 23:00 CEST (UTC+2 after the switch) = 21:00 UTC.
    assert policy["next_run_at"] == "2026-03-29T21:00:00Z"

    cron = await create_policy(
        operator,
        tenant_id,
        name="cron",
        timezone="America/New_York",
        schedule={"type": "cron", "expression": "30 1 * * *"},
        window={"start": "01:00", "duration_minutes": 60},
    )
    assert cron["next_run_at"] == "2026-03-29T05:30:00Z"


@pytest.mark.parametrize(
    ("fields", "field_path"),
    [
        ({"timezone": "Mars/Olympus"}, "body.timezone"),
        ({"timezone": "Europe"}, "body.timezone"),  # a folder of the tz database
        ({"schedule": {"type": "cron", "expression": "61 * * * *"}}, "body.schedule.cron.expression"),
        ({"schedule": {"type": "weekly", "times": ["25:00"]}}, "body.schedule.weekly.times.0"),
        ({"schedule": {"type": "weekly", "times": ["09:00"]}}, "body"),
        ({"retention": {"daily": 0, "weekly": 0, "monthly": 0}}, "body.retention"),
        ({"rpo_hours": 0}, "body.rpo_hours"),
        ({"selection": {"folders": ["no-leading-slash"]}}, "body.selection.folders.0"),
        ({"selection": {"vm_ids": [str(uuid.UUID(int=1))]}}, "body.selection.vm_ids.0"),
        ({"exclusions": {"vm_ids": [str(uuid.UUID(int=2))]}}, "body.exclusions.vm_ids.0"),
        ({"colour": "red"}, "body.colour"),
    ],
)
async def test_invalid_policies_are_rejected_with_the_field(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, fields: dict[str, Any], field_path: str
) -> None:
    _, tenant_id = await customer_of("Acme")
    response = await operator.post(
        "/api/v1/policies", json={"tenant_id": str(tenant_id), "name": "p", **fields}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == field_path
    assert (await operator.get("/api/v1/policies")).json()["total"] == 0


async def test_selection_exclusion_and_conflicts_show_on_vms(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    _, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    folder = vms[0]["folder_path"]
    by_folder = await create_policy(
        operator, tenant_id, name="all-in-folder", selection={"folders": [folder]}
    )
    in_folder = [vm for vm in vms if vm["folder_path"] == folder]
    for vm in in_folder:
        p = await protection(operator, vm["id"])
        assert p["status"] == "protected"
        assert p["policy_id"] == by_folder["id"]
        assert p["policy_name"] == "all-in-folder"
    assert (await operator.get(f"/api/v1/policies/{by_folder['id']}")).json()["protected_vm_count"] == len(
        in_folder
    )

    explicit = await create_policy(operator, tenant_id, name="explicit", selection={"vm_ids": [vms[0]["id"]]})
    clash = await protection(operator, vms[0]["id"])
    assert clash["status"] == "conflict"
    assert clash["policy_id"] is None
    assert set(clash["conflicting_policy_ids"]) == {by_folder["id"], explicit["id"]}
    vm_view = (await operator.get(f"/api/v1/vms/{vms[0]['id']}")).json()
    assert any("conflict" in w.lower() for w in vm_view["warnings"])
    conflicts = await all_items(operator, "/api/v1/vms", protection_status="conflict")
    assert [vm["id"] for vm in conflicts] == [vms[0]["id"]]

    resolved = await operator.patch(
        f"/api/v1/policies/{by_folder['id']}", json={"exclusions": {"vm_ids": [vms[0]["id"]]}}
    )
    assert resolved.status_code == 200
    assert (await protection(operator, vms[0]["id"]))["policy_id"] == explicit["id"]

    disabled = await operator.patch(f"/api/v1/policies/{explicit['id']}", json={"enabled": False})
    assert disabled.json()["next_run_at"] is None
    p = await protection(operator, vms[0]["id"])
    assert p["status"] == "excluded"
    assert "all-in-folder" in p["reason"]

    assert (await operator.delete(f"/api/v1/policies/{by_folder['id']}")).status_code == 204
    assert (await protection(operator, vms[1]["id"]))["status"] == "unprotected"


def tag_vm(server: VcsimServer, vm_name: str, category: str, tag: str) -> str:
    """Attach ``category:tag`` to a VM through the simulator's vAPI; returns the VM's moid."""
    with httpx.Client(base_url=server.url.replace("/sdk", "/rest"), timeout=10) as rest:
        login = rest.post("/com/vmware/cis/session", auth=(server.username, server.password))
        rest.headers["vmware-api-session-id"] = login.json()["value"]
        tag_id = new_tag(rest, new_category(rest, category), tag)
        (vm_moid,) = moids(server, vim.VirtualMachine, vm_name)
        attach(rest, tag_id, "VirtualMachine", vm_moid)
    return vm_moid


async def test_selection_by_vcenter_tag(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim_factory: VcsimFactory
) -> None:
    server = vcsim_factory()
    vm_moid = tag_vm(server, "DC0_H0_VM1", "backup", "gold")
    _, tenant_id, vms = await synced_tenant(operator, customer_of, server)
    tagged = [vm for vm in vms if vm["moid"] == vm_moid]
    assert tagged[0]["tags"] == ["backup:gold"]
    policy = await create_policy(operator, tenant_id, name="gold", selection={"tags": ["backup:gold"]})
    assert [vm["id"] for vm in await all_items(operator, "/api/v1/vms", policy_id=policy["id"])] == [
        tagged[0]["id"]
    ]
    assert [vm["id"] for vm in await all_items(operator, "/api/v1/vms", tag="gold")] == [tagged[0]["id"]]


async def test_customers_read_their_policies_but_cannot_change_them(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    acme, acme_id, acme_vms = await synced_tenant(operator, customer_of, vcsim, "Acme")
    globex, globex_id = await customer_of("Globex")
    policy = await create_policy(operator, acme_id, name="gold")
    assert (await acme.get(f"/api/v1/policies/{policy['id']}")).status_code == 200
    assert (await acme.get("/api/v1/policies")).json()["total"] == 1
    assert (await globex.get("/api/v1/policies")).json()["total"] == 0
    assert (await globex.get(f"/api/v1/policies/{policy['id']}")).status_code == 404
    assert (await acme.patch(f"/api/v1/policies/{policy['id']}", json={"rpo_hours": 1})).status_code == 403
    assert (await acme.delete(f"/api/v1/policies/{policy['id']}")).status_code == 403
    created = await acme.post("/api/v1/policies", json={"tenant_id": str(acme_id), "name": "mine"})
    assert created.status_code == 403
    # An operator cannot attach one tenant's VMs to another tenant's policy.
    cross = await operator.post(
        "/api/v1/policies",
        json={"tenant_id": str(globex_id), "name": "x", "selection": {"vm_ids": [acme_vms[0]["id"]]}},
    )
    assert cross.status_code == 422
    dup = await operator.post("/api/v1/policies", json={"tenant_id": str(acme_id), "name": "gold"})
    assert dup.status_code == 409


async def test_partial_update_keeps_other_fields_and_checks_the_window(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    _, tenant_id = await customer_of("Acme")
    policy = await create_policy(operator, tenant_id, name="p", rpo_hours=12, offsite_copy=True)
    updated = (await operator.patch(f"/api/v1/policies/{policy['id']}", json={"rto_hours": 4})).json()
    assert updated["rpo_hours"] == 12
    assert updated["offsite_copy"] is True
    assert updated["rto_hours"] == 4
    outside = await operator.patch(
        f"/api/v1/policies/{policy['id']}", json={"window": {"start": "01:00", "duration_minutes": 60}}
    )
    assert outside.status_code == 422
    assert "outside the backup window" in outside.json()["detail"]
    null = await operator.patch(f"/api/v1/policies/{policy['id']}", json={"rpo_hours": None})
    assert null.status_code == 422
    assert (await operator.get(f"/api/v1/policies/{policy['id']}")).json()["window"]["start"] == "22:00"
