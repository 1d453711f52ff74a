"""Tenant isolation over every endpoint of the API, discovered from the app's own routes.

A customer key of one tenant must never see or change another tenant's objects: reads of
another tenant's ids are 404 (not 403, which would reveal existence), operator-only actions
are 403 whatever the id, and lists never contain another tenant's objects. New endpoints are
covered automatically; one that this test does not know how to exercise makes it fail.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from app.context import AppContext
from app.contracts.agent import BackupResult, DiskResult
from app.integrations.emitter import EventEmitterLoop
from app.jobs.repository import JobRepository
from app.main import create_app
from app.restore_points.service import RestorePointService
from tests.api.test_policies import create_policy, synced_tenant
from tests.api.test_proxies import register_proxy
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

#: Which object of the victim tenant each path parameter is filled with.
PARAM_SOURCES = {
    "tenant_id": "tenant",
    "key_id": "key",
    "vcenter_id": "vcenter",
    "host_id": "host",
    "datastore_id": "datastore",
    "vm_id": "vm",
    "policy_id": "policy",
    "proxy_id": "proxy",
    "job_id": "job",
    "restore_point_id": "restore_point",
    "restore_id": "restore",
    "agent_id": "guest_agent",
    "request_id": "change_request",
    "integration_id": "integration",
    "delivery_id": "delivery",
}
#: Endpoints that are not tenant data.
EXEMPT = {"/healthz", "/readyz"}


#: Values for required query parameters, by JSON schema type: well-formed, so that a request
#: reaches the tenant check instead of failing validation (which would say nothing either way).
QUERY_VALUES = {"integer": "2000", "string": "/", "boolean": "false"}


def api_routes(ctx: AppContext) -> list[tuple[str, str, dict[str, str]]]:
    """Every (method, path, required query) the API publishes in its OpenAPI document."""
    paths = create_app(ctx=ctx).openapi()["paths"]
    routes = []
    for path, operations in paths.items():
        if path in EXEMPT:
            continue
        for method in sorted(operations):
            query = {
                p["name"]: QUERY_VALUES[p["schema"].get("type", "string")]
                for p in operations[method].get("parameters", [])
                if p["in"] == "query" and p.get("required")
            }
            routes.append((method.upper(), path, query))
    return routes


async def record_restore_point(ctx: AppContext, job_id: uuid.UUID) -> uuid.UUID:
    """Catalog record of a restore point (test data: isolation is about the API, not backups)."""
    point_id = uuid.uuid4()
    async with ctx.sessionmaker.begin() as session:
        job = await JobRepository(session).get(job_id)
        assert job is not None
        result = BackupResult(
            restore_point_id=point_id,
            created_at=ctx.clock.now(),
            consistency="crash",
            disks=[DiskResult(key=2000, label="Hard disk 1", size=1 << 20)],
        )
        await RestorePointService(session).record_backup(job, "vm", result, [])
    return point_id


async def victim_objects(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> dict[str, str]:
    victim, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim, "Victim")
    policy = await create_policy(operator, tenant_id, name="gold", selection={"vm_ids": [vms[0]["id"]]})
    host = (await operator.get("/api/v1/hosts", params={"tenant_id": str(tenant_id)})).json()["items"][0]
    datastore = (await operator.get("/api/v1/datastores", params={"tenant_id": str(tenant_id)})).json()[
        "items"
    ][0]
    vcenter = (await operator.get("/api/v1/vcenters", params={"tenant_id": str(tenant_id)})).json()["items"][
        0
    ]
    key = (await victim.get("/api/v1/api-keys")).json()["items"][0]
    proxy = await register_proxy(operator, "victim-proxy", [host["id"]])
    guest = await victim.post("/api/v1/guest-agents", json={"vm_id": vms[0]["id"]})
    assert guest.status_code == 201, guest.text
    change = await victim.post(
        "/api/v1/change-requests",
        json={"kind": "protect", "policy_id": policy["id"], "vm_ids": [vms[1]["id"]]},
    )
    assert change.status_code == 201, change.text
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    point_id = await record_restore_point(ctx, uuid.UUID(job["id"]))
    restore = await victim.post(
        "/api/v1/restores",
        json={
            "restore_point_id": str(point_id),
            "target": "new",
            "new_vm": {"name": "copy", "host_id": host["id"], "datastore_id": datastore["id"]},
        },
    )
    assert restore.status_code == 202, restore.text
    integration = await victim.post(
        "/api/v1/integrations", json={"name": "desk", "url": "http://127.0.0.1:9/"}
    )
    assert integration.status_code == 201, integration.text
    await EventEmitterLoop(ctx.sessionmaker, ctx.clock).run_once()
    deliveries = await victim.get(f"/api/v1/integrations/{integration.json()['id']}/deliveries")
    delivery = deliveries.json()["items"][0]
    return {
        "integration": integration.json()["id"],
        "delivery": delivery["id"],
        "job": job["id"],
        "restore_point": str(point_id),
        "restore": restore.json()["id"],
        "tenant": str(tenant_id),
        "key": key["id"],
        "vcenter": vcenter["id"],
        "host": host["id"],
        "datastore": datastore["id"],
        "vm": vms[0]["id"],
        "policy": policy["id"],
        "proxy": proxy["id"],
        "guest_agent": guest.json()["id"],
        "change_request": change.json()["id"],
    }


def without_usage(page: dict[str, Any]) -> dict[str, Any]:
    """A list page minus the keys' last-use times, which the intruder's own requests move."""
    for item in page["items"]:
        item.pop("last_used_at", None)
    return page


def fill(path: str, objects: dict[str, str]) -> str:
    def repl(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in PARAM_SOURCES:
            pytest.fail(f"tenant isolation test does not know path parameter {name!r} in {path}")
        return objects[PARAM_SOURCES[name]]

    return re.sub(r"\{(\w+)\}", repl, path)


async def test_a_customer_never_reaches_another_tenants_objects(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    objects = await victim_objects(ctx, operator, customer_of, vcsim)
    intruder, intruder_tenant = await customer_of("Intruder")
    snapshot_before = {
        path: without_usage((await operator.get(path)).json())
        for path in (
            "/api/v1/tenants",
            "/api/v1/vcenters",
            "/api/v1/policies",
            "/api/v1/proxies",
            "/api/v1/api-keys",
            "/api/v1/jobs",
            "/api/v1/restore-points",
            "/api/v1/restores",
            "/api/v1/guest-agents",
            "/api/v1/change-requests",
            "/api/v1/integrations",
        )
    }

    checked = 0
    for method, template, query in api_routes(ctx):
        path = fill(template, objects)
        body: dict[str, Any] | None = {} if method in ("POST", "PATCH", "PUT") else None
        response = await intruder.request(method, path, json=body, params=query)
        where = f"{method} {template}"
        if template.startswith("/api/v1/agent/"):
            assert response.status_code == 401, f"{where}: a customer key reached the agent channel"
        elif "{" in template:
            # An object of another tenant: not found, or forbidden for operator-only actions.
            assert response.status_code in (403, 404, 422), f"{where}: {response.status_code} {response.text}"
            if method == "GET":
                assert response.status_code in (403, 404), f"{where} leaked: {response.status_code}"
        elif method == "GET":
            assert response.status_code in (200, 403), where
            if response.status_code == 200:
                text = response.text
                for name, object_id in objects.items():
                    assert object_id not in text, f"{where} lists the victim's {name}"
        else:
            assert response.status_code in (403, 422), f"{where}: {response.status_code}"
        checked += 1
    assert checked >= 25

    # And nothing changed for the victim.
    for path, before in snapshot_before.items():
        after = without_usage((await operator.get(path)).json())
        assert after == before, path
    assert uuid.UUID(objects["tenant"]) != intruder_tenant


async def test_customer_filters_cannot_widen_their_scope(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    objects = await victim_objects(ctx, operator, customer_of, vcsim)
    intruder, _ = await customer_of("Intruder")
    for path, params in (
        ("/api/v1/vms", {"tenant_id": objects["tenant"]}),
        ("/api/v1/vms", {"host_id": objects["host"]}),
        ("/api/v1/vms", {"datastore_id": objects["datastore"]}),
        ("/api/v1/vms", {"policy_id": objects["policy"]}),
        ("/api/v1/vms", {"vcenter_id": objects["vcenter"]}),
        ("/api/v1/hosts", {"vcenter_id": objects["vcenter"]}),
        ("/api/v1/datastores", {"vcenter_id": objects["vcenter"]}),
        ("/api/v1/policies", {"tenant_id": objects["tenant"]}),
        ("/api/v1/vcenters", {"tenant_id": objects["tenant"]}),
        ("/api/v1/api-keys", {"tenant_id": objects["tenant"]}),
        ("/api/v1/jobs", {"vm_id": objects["vm"]}),
        ("/api/v1/restore-points", {"vm_id": objects["vm"]}),
        ("/api/v1/restores", {"vm_id": objects["vm"]}),
        ("/api/v1/guest-agents", {"vm_id": objects["vm"]}),
    ):
        response = await intruder.get(path, params=params)
        assert response.status_code == 200 and response.json()["total"] == 0, (path, params)
