"""The agent channel in the audit log: state changes recorded, the chatter (heartbeats, progress,
empty long-polls) not."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_policies import synced_tenant
from tests.api.test_proxies import BEAT, register_proxy
from tests.audit.test_audit_log import events
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim

CLAIM = {"capacity": 4, "wait_s": 0}


async def test_agents_claims_and_completions_are_recorded_heartbeats_are_not(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer, make_client: ClientFactory
) -> None:
    _, _, vms = await synced_tenant(operator, customer_of, vcsim)
    proxy = await register_proxy(operator, "p", [vms[0]["host"]["id"]])
    agent = make_client(proxy["token"])
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    assert (await agent.post("/api/v1/agent/heartbeat", json=BEAT)).status_code == 200
    claimed = (await agent.post("/api/v1/agent/jobs/claim", json=CLAIM)).json()["jobs"]
    assert [j["job_id"] for j in claimed] == [job["id"]]
    assert (await agent.post("/api/v1/agent/jobs/claim", json=CLAIM)).json()["jobs"] == []
    progress = await agent.post(f"/api/v1/agent/jobs/{job['id']}/progress", json={"phase": "reading"})
    assert progress.status_code == 200
    done = await agent.post(
        f"/api/v1/agent/jobs/{job['id']}/complete",
        json={"outcome": "failed", "error": "boom", "error_kind": "permanent"},
    )
    assert done.status_code == 204

    by_agent = await events(operator, actor="agent")
    assert [e["action"] for e in by_agent] == [
        "POST /api/v1/agent/jobs/{job_id}/complete",
        "POST /api/v1/agent/jobs/claim",
    ]
    assert {(e["key_id"], e["object_type"], e["object_id"]) for e in by_agent} == {
        (proxy["id"], "job", job["id"])
    }
    assert by_agent[0]["key_lookup_id"] == proxy["token"].split("_")[1]
    creates = await events(operator, action="POST /api/v1/jobs")
    assert creates[0]["object_id"] == job["id"] and creates[0]["object_type"] == "job"
