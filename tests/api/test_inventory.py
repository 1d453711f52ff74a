"""Inventory sync through the API, compared with what the simulator itself serves."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from pyVmomi import vim

from tests.api.test_vcenters import register
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp.reference import find, folder_path, objects, props, session, wait_for_task

pytestmark = pytest.mark.vcsim


async def all_items(client: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = await client.get(path, params={**params, "limit": 2, "offset": offset})
        assert page.status_code == 200, page.text
        body = page.json()
        items.extend(body["items"])
        offset += 2
        if offset >= body["total"]:
            assert len(items) == body["total"]
            return items


def simulator_view(server: VcsimServer) -> dict[str, dict[str, Any]]:
    """What the simulator serves, read independently through pyvmomi."""
    with session(server) as si:
        hosts = {}
        for host in objects(si, vim.HostSystem):
            p = props(si, host, "name", "runtime")
            hosts[host._moId] = {"name": p["name"], "connection_state": p["runtime"].connectionState}
        datastores = {}
        for ds in objects(si, vim.Datastore):
            p = props(si, ds, "name", "summary")
            datastores[ds._moId] = {
                "name": p["name"],
                "capacity_bytes": p["summary"].capacity,
                "free_bytes": p["summary"].freeSpace,
            }
        vms = {}
        for vm in objects(si, vim.VirtualMachine):
            p = props(si, vm, "name", "config", "runtime", "datastore")
            vms[p["config"].instanceUuid] = {
                "moid": vm._moId,
                "name": p["name"],
                "power_state": p["runtime"].powerState,
                "host_moid": p["runtime"].host._moId,
                "datastores": sorted(d._moId for d in p["datastore"]),
                "disk_capacities": sorted(
                    d.capacityInBytes or d.capacityInKB * 1024
                    for d in p["config"].hardware.device
                    if isinstance(d, vim.vm.device.VirtualDisk)
                ),
                "folder_path": folder_path(si, vm),
            }
    return {"hosts": hosts, "datastores": datastores, "vms": vms}


async def test_sync_matches_what_the_simulator_serves(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, vcsim.url)
    report = await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")
    assert report.status_code == 200, report.text
    expected = simulator_view(vcsim)
    assert report.json()["vms"]["added"] == len(expected["vms"]) > 0

    hosts = await all_items(operator, "/api/v1/hosts", vcenter_id=vc["id"])
    assert {
        h["moid"]: {"name": h["name"], "connection_state": h["connection_state"]} for h in hosts
    } == expected["hosts"]
    datastores = await all_items(operator, "/api/v1/datastores")
    assert {
        d["moid"]: {"name": d["name"], "capacity_bytes": d["capacity_bytes"], "free_bytes": d["free_bytes"]}
        for d in datastores
    } == expected["datastores"]
    for d in datastores:
        assert d["free_percent"] == pytest.approx(100 * d["free_bytes"] / d["capacity_bytes"], abs=0.01)
        assert d["space_status"] in ("ok", "warning", "critical")

    host_moids = {h["id"]: h["moid"] for h in hosts}
    ds_moids = {d["id"]: d["moid"] for d in datastores}
    vms = await all_items(operator, "/api/v1/vms")
    assert {vm["instance_uuid"] for vm in vms} == set(expected["vms"])
    for vm in vms:
        want = expected["vms"][vm["instance_uuid"]]
        assert vm["moid"] == want["moid"]
        assert vm["name"] == want["name"]
        assert vm["power_state"] == want["power_state"]
        assert host_moids[vm["host"]["id"]] == want["host_moid"]
        assert sorted(ds_moids[d["id"]] for d in vm["datastores"]) == want["datastores"]
        assert sorted(d["capacity_bytes"] for d in vm["disks"]) == want["disk_capacities"]
        assert vm["folder_path"] == want["folder_path"]
        assert vm["protection"]["status"] == "unprotected"

    assert (await operator.get(f"/api/v1/vcenters/{vc['id']}")).json()["last_sync_status"] == "ok"
    again = (await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")).json()
    assert again["vms"] == {"added": 0, "updated": 0, "gone": 0, "returned": 0, "total": len(expected["vms"])}


async def test_inventory_filters(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, vcsim.url)
    assert (await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")).status_code == 200
    hosts = await all_items(operator, "/api/v1/hosts")
    clustered = [h for h in hosts if h["cluster"]]
    cluster = clustered[0]["cluster"]
    by_cluster = await all_items(operator, "/api/v1/hosts", cluster=cluster)
    assert {h["id"] for h in by_cluster} == {h["id"] for h in clustered if h["cluster"] == cluster}

    host = hosts[0]
    on_host = await all_items(operator, "/api/v1/vms", host_id=host["id"])
    assert on_host
    assert all(vm["host"]["id"] == host["id"] for vm in on_host)
    datastore = (await operator.get("/api/v1/datastores")).json()["items"][0]
    on_ds = await all_items(operator, "/api/v1/vms", datastore_id=datastore["id"])
    assert on_ds
    assert all(datastore["id"] in [d["id"] for d in vm["datastores"]] for vm in on_ds)
    some_vm = on_host[0]
    named = await all_items(operator, "/api/v1/vms", q=some_vm["name"].lower())
    assert some_vm["id"] in {vm["id"] for vm in named}
    in_folder = await all_items(operator, "/api/v1/vms", folder=some_vm["folder_path"])
    assert some_vm["id"] in {vm["id"] for vm in in_folder}
    assert (await operator.get("/api/v1/vms", params={"folder": "/nope"})).json()["total"] == 0
    assert (await operator.get("/api/v1/vms", params={"protection_status": "bogus"})).status_code == 422


async def test_vanished_vm_is_marked_gone_not_deleted(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim_factory: VcsimFactory
) -> None:
    server = vcsim_factory()
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, server.url)
    assert (await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")).status_code == 200
    before = await all_items(operator, "/api/v1/vms")
    with session(server) as si:
        vm = find(si, vim.VirtualMachine, before[0]["name"])
        wait_for_task(si, vm.PowerOffVM_Task())
        wait_for_task(si, vm.Destroy_Task())
        other = find(si, vim.VirtualMachine, before[1]["name"])
        wait_for_task(si, other.PowerOffVM_Task())

    report = (await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")).json()
    assert report["vms"]["gone"] == 1
    assert report["vms"]["updated"] == 1
    present = await all_items(operator, "/api/v1/vms")
    assert before[0]["id"] not in {vm["id"] for vm in present}
    gone = (await operator.get(f"/api/v1/vms/{before[0]['id']}")).json()
    assert gone["gone_at"] is not None
    assert any("no longer exists" in w for w in gone["warnings"])
    with_gone = await all_items(operator, "/api/v1/vms", include_gone="true")
    assert len(with_gone) == len(before)
    powered_off = (await operator.get(f"/api/v1/vms/{before[1]['id']}")).json()
    assert powered_off["power_state"] == "poweredOff"
    assert [vm["id"] for vm in await all_items(operator, "/api/v1/vms", power_state="poweredOff")] == [
        before[1]["id"]
    ]


async def test_customers_see_only_their_inventory(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    acme, acme_id = await customer_of("Acme")
    globex, globex_id = await customer_of("Globex")
    acme_vc = await register(operator, acme_id, vcsim.url, name="a")
    await operator.post(f"/api/v1/vcenters/{acme_vc['id']}/sync")
    for path in ("/api/v1/hosts", "/api/v1/datastores", "/api/v1/vms"):
        assert (await globex.get(path)).json()["total"] == 0
        acme_items = (await acme.get(path)).json()
        assert acme_items["total"] > 0
        one = acme_items["items"][0]["id"]
        assert (await globex.get(f"{path}/{one}")).status_code == 404
        assert (await acme.get(f"{path}/{one}")).status_code == 200
        # A customer asking for another tenant's objects by filter gets nothing either.
        assert (await globex.get(path, params={"tenant_id": str(acme_id)})).json()["total"] == 0
    assert (await operator.get("/api/v1/vms", params={"tenant_id": str(globex_id)})).json()["total"] == 0
    assert (await operator.get(f"/api/v1/vms/{uuid.uuid4()}")).status_code == 404
