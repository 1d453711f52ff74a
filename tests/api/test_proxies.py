"""Proxies: registration for hosts, tokens that reach only the agent channel, liveness."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
import pytest

from app.clock import ManualClock
from tests.api.test_inventory import all_items
from tests.api.test_policies import create_policy, synced_tenant
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

BEAT = {"agent_version": "0.1.0", "hostname": "proxy-01"}


async def register_proxy(operator: httpx.AsyncClient, name: str, host_ids: list[str]) -> dict[str, Any]:
    response = await operator.post("/api/v1/proxies", json={"name": name, "host_ids": host_ids})
    assert response.status_code == 201, response.text
    return response.json()


async def test_registered_proxy_heartbeats_and_goes_stale_then_offline(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
    clock: ManualClock,
) -> None:
    await synced_tenant(operator, customer_of, vcsim)
    hosts = await all_items(operator, "/api/v1/hosts")
    proxy = await register_proxy(operator, "proxy-01", [hosts[0]["id"], hosts[1]["id"]])
    assert proxy["token"].startswith("vmrp_")
    assert proxy["status"] == "offline"  # never heartbeated
    assert {h["id"] for h in proxy["hosts"]} == {hosts[0]["id"], hosts[1]["id"]}
    assert "token" not in (await operator.get(f"/api/v1/proxies/{proxy['id']}")).json()

    agent = make_client(proxy["token"])
    ack = await agent.post("/api/v1/agent/heartbeat", json=BEAT)
    assert ack.status_code == 200, ack.text
    assert {h["moid"] for h in ack.json()["hosts"]} == {hosts[0]["moid"], hosts[1]["moid"]}
    shown = (await operator.get(f"/api/v1/proxies/{proxy['id']}")).json()
    assert shown["status"] == "online" and shown["agent_hostname"] == "proxy-01"
    host = (await operator.get(f"/api/v1/hosts/{hosts[0]['id']}")).json()
    assert host["proxy_status"] == "online" and host["proxies"][0]["name"] == "proxy-01"

    clock.advance(timedelta(seconds=120))
    assert (await operator.get(f"/api/v1/proxies/{proxy['id']}")).json()["status"] == "stale"
    clock.advance(timedelta(seconds=300))
    assert (await operator.get(f"/api/v1/proxies/{proxy['id']}")).json()["status"] == "offline"
    await agent.post("/api/v1/agent/heartbeat", json=BEAT)
    assert (await operator.get(f"/api/v1/proxies/{proxy['id']}")).json()["status"] == "online"


async def test_proxy_tokens_reach_only_the_agent_channel_and_keys_never_reach_it(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
) -> None:
    customer, _, _ = await synced_tenant(operator, customer_of, vcsim)
    host = (await operator.get("/api/v1/hosts")).json()["items"][0]
    proxy = await register_proxy(operator, "p", [host["id"]])
    agent = make_client(proxy["token"])
    for path in ("/api/v1/tenants", "/api/v1/vms", "/api/v1/proxies"):
        assert (await agent.get(path)).status_code == 401
    assert (await operator.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 401
    assert (await customer.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 401
    forged = make_client(proxy["token"][:-2] + "xx")
    assert (await forged.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 401

    rotated = await operator.post(f"/api/v1/proxies/{proxy['id']}/token")
    assert rotated.status_code == 200
    assert (await agent.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 401
    new_agent = make_client(rotated.json()["token"])
    assert (await new_agent.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 200
    bad = await new_agent.post("/api/v1/agent/heartbeat", json={**BEAT, "extra": 1})
    assert bad.status_code == 422


async def test_proxies_are_operator_only_and_validate_hosts(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, _, _ = await synced_tenant(operator, customer_of, vcsim)
    host = (await operator.get("/api/v1/hosts")).json()["items"][0]
    assert (await customer.get("/api/v1/proxies")).status_code == 403
    assert (
        await customer.post("/api/v1/proxies", json={"name": "x", "host_ids": [host["id"]]})
    ).status_code == 403
    unknown = await operator.post(
        "/api/v1/proxies",
        json={"name": "x", "host_ids": [host["id"], "00000000-0000-0000-0000-000000000009"]},
    )
    assert unknown.status_code == 422 and unknown.json()["errors"][0]["field"] == "body.host_ids.1"
    assert (await operator.post("/api/v1/proxies", json={"name": "x", "host_ids": []})).status_code == 422
    await register_proxy(operator, "x", [host["id"]])
    assert (
        await operator.post("/api/v1/proxies", json={"name": "x", "host_ids": [host["id"]]})
    ).status_code == 409
    assert (await operator.get("/api/v1/proxies")).json()["total"] == 1


async def test_hosts_with_protected_vms_and_no_online_proxy_are_flagged(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    make_client: ClientFactory,
) -> None:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim)
    vm = vms[0]
    await create_policy(operator, tenant_id, name="gold", selection={"vm_ids": [vm["id"]]})
    host = (await operator.get(f"/api/v1/hosts/{vm['host']['id']}")).json()
    assert host["protected_vm_count"] == 1 and host["needs_proxy"] is True and host["proxy_status"] == "none"
    seen_by_customer = (await customer.get(f"/api/v1/vms/{vm['id']}")).json()
    assert seen_by_customer["proxy_status"] == "none"
    assert any("No proxy is registered for host" in w for w in seen_by_customer["warnings"])
    flagged = await all_items(operator, "/api/v1/hosts", has_online_proxy="false")
    assert host["id"] in {h["id"] for h in flagged}

    proxy = await register_proxy(operator, "p", [host["id"]])
    registered = (await operator.get(f"/api/v1/vms/{vm['id']}")).json()
    assert any("No online proxy for host" in w for w in registered["warnings"])
    await make_client(proxy["token"]).post("/api/v1/agent/heartbeat", json=BEAT)
    healthy_host = (await operator.get(f"/api/v1/hosts/{host['id']}")).json()
    assert healthy_host["needs_proxy"] is False and healthy_host["proxy_status"] == "online"
    assert (await operator.get(f"/api/v1/vms/{vm['id']}")).json()["warnings"] == []
    online = await all_items(operator, "/api/v1/hosts", has_online_proxy="true")
    assert [h["id"] for h in online] == [host["id"]]


async def test_moving_a_proxy_to_other_hosts_and_deleting_it(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    await synced_tenant(operator, customer_of, vcsim)
    hosts = await all_items(operator, "/api/v1/hosts")
    proxy = await register_proxy(operator, "p", [hosts[0]["id"]])
    moved = await operator.patch(
        f"/api/v1/proxies/{proxy['id']}", json={"host_ids": [hosts[1]["id"]], "max_concurrent_jobs": 4}
    )
    assert moved.status_code == 200
    assert [h["id"] for h in moved.json()["hosts"]] == [hosts[1]["id"]] and moved.json()[
        "max_concurrent_jobs"
    ] == 4
    assert (await operator.get(f"/api/v1/hosts/{hosts[0]['id']}")).json()["proxies"] == []
    by_host = (await operator.get("/api/v1/proxies", params={"host_id": hosts[1]["id"]})).json()
    assert by_host["total"] == 1
    assert (await operator.delete(f"/api/v1/proxies/{proxy['id']}")).status_code == 204
    assert (await operator.get(f"/api/v1/hosts/{hosts[1]['id']}")).json()["proxies"] == []
