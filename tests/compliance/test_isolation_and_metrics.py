"""Customers see only their tenant on every compliance endpoint; /metrics in Prometheus format."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.clock import ManualClock
from app.context import AppContext
from app.scheduler.loop import LoopService
from tests.compliance.helpers import (
    add_job,
    add_point,
    hours,
    online_proxy,
    protected_vm,
    rpo_recorder,
)
from tests.compliance.test_restore_sla import request_restore
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

BASE = "/api/v1/compliance"


async def victim(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> dict[str, Any]:
    customer, tenant_id, vm, policy = await protected_vm(operator, customer_of, vcsim, tenant="Victim")
    point = await add_point(ctx, vm["id"])
    restore = await request_restore(customer, point, vm)
    ctx.clock.advance(hours(30))  # type: ignore[attr-defined]
    await rpo_recorder(ctx).run_once()
    return {"tenant": str(tenant_id), "vm": vm["id"], "policy": policy["id"], "restore": restore}


async def test_customers_see_only_their_tenant_on_compliance_endpoints(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    objects = await victim(ctx, operator, customer_of, vcsim)
    intruder, intruder_tenant = await customer_of("Intruder")
    victim_ids = set(objects.values())

    for path in ("/rpo", "/rpo/breaches", "/restores", "/summary"):
        for params in (
            {},
            {"tenant_id": objects["tenant"]},
            {"vm_id": objects["vm"]},
            {"policy_id": objects["policy"]},
        ):
            if path == "/summary" and "vm_id" in params:
                continue
            response = await intruder.get(BASE + path, params={**params, "group_by": "vm"})
            assert response.status_code == 200, (path, params, response.text)
            assert not any(i in response.text for i in victim_ids), (path, params)
            body = response.json()
            if "total" in body:
                assert body["total"] == 0, (path, params)
            else:
                assert body["rpo"]["vm_count"] == 0 and body["restores"]["restores"] == 0
    for group_by in ("policy", "tenant"):
        groups = (await intruder.get(f"{BASE}/rpo", params={"group_by": group_by})).json()
        assert groups["total"] == 0
    assert (await intruder.get(f"{BASE}/rpo/vms/{objects['vm']}")).status_code == 404
    assert (await intruder.get(f"{BASE}/restores/{objects['restore']}")).status_code == 404

    # The operator, and the victim itself, see them.
    for client, params in ((operator, {}), (operator, {"tenant_id": objects["tenant"]})):
        assert (await client.get(f"{BASE}/rpo", params=params)).json()["total"] == 1
        assert (await client.get(f"{BASE}/rpo/breaches", params=params)).json()["total"] == 1
        assert (await client.get(f"{BASE}/restores", params=params)).json()["total"] == 1
    assert (await operator.get(f"{BASE}/rpo/vms/{objects['vm']}")).status_code == 200
    summary = (await operator.get(f"{BASE}/summary")).json()
    assert summary["rpo"]["breached"] == 1 and summary["open_breaches_by_cause"] == {"no_proxy": 1}
    assert (await operator.get(f"{BASE}/rpo", params={"tenant_id": str(intruder_tenant)})).json()[
        "total"
    ] == 0


class _Tick(LoopService):
    name = "tick"

    def __init__(self) -> None:
        super().__init__(interval_s=0.01)
        self.ran = asyncio.Event()

    async def run_once(self) -> None:
        self.ran.set()


async def test_metrics_are_prometheus_text_read_from_the_catalog(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    anonymous: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    clock: ManualClock,
) -> None:
    _, _, vm, _ = await protected_vm(operator, customer_of, vcsim)
    await online_proxy(operator, ctx, vm["host"]["id"])
    now = clock.now()
    await add_job(
        ctx,
        vm["id"],
        "succeeded",
        started=now - timedelta(seconds=600),
        finished=now,
        bytes_read=1000,
        bytes_stored=400,
    )
    await add_job(ctx, vm["id"], "failed", started=now - timedelta(seconds=30), finished=now)
    await add_job(ctx, vm["id"], "queued")
    clock.advance(hours(25))
    await rpo_recorder(ctx).run_once()
    clock.advance(timedelta(hours=-24))  # the jobs ended 1 h ago
    tick = _Tick()
    task = asyncio.create_task(tick.run_forever())
    try:
        await asyncio.wait_for(tick.ran.wait(), 60)
        response = await anonymous.get("/metrics")
    finally:
        tick.stop()
        await task
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    for name in (
        "vmr_catalog_up",
        "vmr_jobs",
        "vmr_job_duration_seconds",
        "vmr_job_bytes_read_24h",
        "vmr_job_bytes_stored_24h",
        "vmr_restore_points_stored_bytes",
        "vmr_rpo_breaches_open",
        "vmr_rpo_breaches_open_total",
        "vmr_restores_at_risk",
        "vmr_restores_sla",
        "vmr_proxies",
        "vmr_proxies_online",
        "vmr_scheduler_loop_lag_seconds",
    ):
        assert name in families, name

    def value(family: str, sample: str | None = None, **labels: str) -> float:
        for s in families[family].samples:
            if (sample is None or s.name == sample) and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no sample {family} {sample} {labels}")

    assert value("vmr_catalog_up") == 1
    assert value("vmr_jobs", kind="backup", state="succeeded") == 1
    assert value("vmr_jobs", kind="backup", state="queued") == 1
    hist = "vmr_job_duration_seconds"
    assert value(hist, f"{hist}_bucket", kind="backup", le="300.0") == 1  # the 30 s one
    assert value(hist, f"{hist}_bucket", kind="backup", le="900.0") == 2
    assert value(f"{hist}_gcount", kind="backup") == 2  # text format: its own gauge
    assert value(f"{hist}_gsum", kind="backup") == pytest.approx(630, abs=0.01)
    assert value("vmr_job_bytes_read_24h", kind="backup") == 1000
    assert value("vmr_job_bytes_stored_24h", kind="backup") == 400
    assert value("vmr_rpo_breaches_open_total") == 1
    assert value("vmr_proxies_online") == 0  # its heartbeat is a day old
    assert value("vmr_proxies", status="offline") == 1
    assert value("vmr_restores_at_risk") == 0
    assert value("vmr_scheduler_loop_lag_seconds", loop="tick") >= 0
    assert "/metrics" not in (await anonymous.get("/openapi.json")).json()["paths"]
