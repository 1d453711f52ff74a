"""The audit log through the real app: what is recorded, who sees it, and that nobody edits it."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.audit.middleware import AuditMiddleware
from app.audit.models import AuditEvent
from app.audit.service import AuditService
from app.clock import ManualClock
from app.context import AppContext
from tests.support.app import ClientFactory, CustomerFactory

API = "/api/v1/audit-events"


async def events(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    response = await client.get(API, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def count_rows(ctx: AppContext) -> int:
    async with ctx.sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(AuditEvent))).scalar_one())


async def test_mutating_requests_are_recorded_with_who_what_and_outcome(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    created = await operator.post(
        "/api/v1/tenants", json={"name": "Acme"}, headers={"X-Request-ID": "req-42"}
    )
    assert created.status_code == 201
    assert created.headers["x-request-id"] == "req-42"
    tenant_id = created.json()["id"]
    await operator.get("/api/v1/tenants")  # reads are not recorded
    invalid = await operator.patch(f"/api/v1/tenants/{tenant_id}", json={"name": ""})
    assert invalid.status_code == 422
    customer, customer_tenant = await customer_of("Globex")
    denied = await customer.post("/api/v1/tenants", json={"name": "Mine"})
    assert denied.status_code == 403

    log = await events(operator)
    actions = [(e["action"], e["status"]) for e in log]
    assert ("GET /api/v1/tenants", 200) not in actions
    first = next(e for e in log if e["request_id"] == "req-42")
    operator_lookup = operator.headers["Authorization"].split("_")[1]
    assert first["actor"] == "operator" and first["key_lookup_id"] == operator_lookup
    assert first["key_id"] is not None and first["tenant_id"] is None
    assert first["action"] == "POST /api/v1/tenants"
    assert (first["object_type"], first["object_id"]) == ("tenant", tenant_id)
    assert (first["outcome"], first["status"], first["source_address"]) == ("success", 201, "127.0.0.1")

    patch = next(e for e in log if e["action"] == "PATCH /api/v1/tenants/{tenant_id}")
    assert (patch["outcome"], patch["status"], patch["object_id"]) == ("invalid", 422, tenant_id)
    assert "name" in patch["detail"]["reason"]

    refused = next(e for e in log if e["status"] == 403)
    assert refused["actor"] == "customer" and refused["tenant_id"] == str(customer_tenant)
    assert refused["outcome"] == "denied" and refused["action"] == "POST /api/v1/tenants"
    # Newest first.
    assert [e["at"] for e in log] == sorted((e["at"] for e in log), reverse=True)


async def test_failed_logins_are_recorded_anywhere_never_with_the_secret(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, make_client: ClientFactory
) -> None:
    customer, tenant_id = await customer_of("Acme")
    secret = customer.headers["Authorization"].removeprefix("Bearer ")
    prefix, lookup, _ = secret.split("_", 2)
    wrong = make_client(f"{prefix}_{lookup}_{'x' * 43}")  # a real key's public part, a wrong secret
    assert (await wrong.get("/api/v1/vms")).status_code == 401  # a read: 401s are recorded anywhere
    assert (await make_client("not-a-key").post("/api/v1/tenants", json={"name": "x"})).status_code == 401
    assert (await make_client(None).get("/api/v1/jobs")).status_code == 401
    assert (
        await make_client("vmrp_0123456789abcdef_nope").post("/api/v1/agent/heartbeat", json={})
    ).status_code == 401

    failures = await events(operator, outcome="denied")
    by_action = {e["action"]: e for e in failures}
    guessed = by_action["GET /api/v1/vms"]
    assert guessed["status"] == 401 and guessed["actor"] == "anonymous"
    assert guessed["key_lookup_id"] == lookup
    key = (await operator.get("/api/v1/api-keys", params={"tenant_id": str(tenant_id)})).json()["items"][0]
    assert guessed["key_id"] == key["id"] and guessed["tenant_id"] == str(tenant_id)
    assert "not valid" in guessed["detail"]["reason"]
    assert by_action["POST /api/v1/tenants"]["key_lookup_id"] is None  # not our shape: not kept
    assert by_action["GET /api/v1/jobs"]["key_lookup_id"] is None
    agent = by_action["POST /api/v1/agent/heartbeat"]
    assert agent["key_lookup_id"] == "0123456789abcdef" and agent["key_id"] is None

    # The customer sees the attempt on their key (a refusal: without object or reason).
    seen = await events(customer, outcome="denied")
    assert [e["action"] for e in seen] == ["GET /api/v1/vms"]
    assert seen[0]["detail"] == {} and seen[0]["object_id"] is None
    async with ctx.sessionmaker() as session:
        rows = (await session.execute(select(AuditEvent))).scalars().all()
    stored = " ".join(f"{r.key_lookup_id} {r.detail} {r.object_id} {r.action}" for r in rows)
    assert "x" * 43 not in stored and "nope" not in stored


async def test_customers_see_their_tenants_events_and_filters_narrow(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory, clock: ManualClock
) -> None:
    acme, acme_id = await customer_of("Acme")
    globex, globex_id = await customer_of("Globex")
    start = clock.now()
    clock.advance(timedelta(minutes=5))
    assert (await acme.post("/api/v1/tenants", json={"name": "Mine"})).status_code == 403
    acme_policy = await acme.post(f"/api/v1/tenants/{globex_id}/nothing", json={})
    assert acme_policy.status_code in (404, 405)  # no such endpoint: not recorded
    assert (await globex.post("/api/v1/tenants", json={"name": "Ours"})).status_code == 403

    mine = await events(acme)
    assert mine and {e["tenant_id"] for e in mine} == {str(acme_id)}
    assert all("nothing" not in e["action"] for e in mine)
    theirs = await events(globex)
    assert theirs and {e["tenant_id"] for e in theirs} == {str(globex_id)}
    # Filters cannot widen a customer's view.
    assert await events(acme, tenant_id=str(globex_id)) == []

    everything = await events(operator)
    assert {str(acme_id), str(globex_id)} <= {e["tenant_id"] for e in everything}
    later = await events(operator, since=(start + timedelta(minutes=1)).isoformat())
    assert {e["tenant_id"] for e in later} == {str(acme_id), str(globex_id)}
    earlier = await events(operator, until=(start + timedelta(minutes=1)).isoformat())
    assert {e["action"] for e in earlier} == {"POST /api/v1/tenants"}  # the operator made both tenants
    tenant_creates = await events(operator, action="POST /api/v1/tenants", outcome="success")
    assert len(tenant_creates) == 2
    assert len(await events(operator, action="POST /api/v1/tenants")) == 4
    by_object = await events(operator, object_id=str(acme_id))
    assert [e["action"] for e in by_object] == ["POST /api/v1/tenants"]
    key_id = by_object[0]["key_id"]
    assert len(await events(operator, key_id=key_id)) >= 2
    assert await events(operator, actor="customer", outcome="success") == []
    page = (await operator.get(API, params={"limit": 1, "offset": 1})).json()
    assert page["total"] == len(everything) and len(page["items"]) == 1


async def test_the_log_is_append_only_through_the_api(
    ctx: AppContext, operator: httpx.AsyncClient, clock: ManualClock
) -> None:
    await operator.post("/api/v1/tenants", json={"name": "Acme"})
    before = await events(operator)
    spec = (await operator.get("/openapi.json")).json()["paths"]
    audit_paths = {path: sorted(ops) for path, ops in spec.items() if "audit" in path}
    assert audit_paths == {API: ["get"]}
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for path in (API, f"{API}/{before[0]['id']}"):
            response = await operator.request(method, path, json={"action": "nothing happened"})
            assert response.status_code in (404, 405), (method, path, response.status_code)
    after = await events(operator)
    # What was there is there unchanged; the attempts on the collection are recorded themselves.
    assert after[-len(before) :] == before
    attempts = after[: -len(before)]
    assert sorted(e["action"] for e in attempts) == sorted(
        f"{m} {API}" for m in ("POST", "PUT", "PATCH", "DELETE")
    )
    assert {(e["status"], e["outcome"]) for e in attempts} == {(405, "invalid")}
    assert await count_rows(ctx) == len(after)


async def test_request_ids_round_trip_and_malformed_ones_are_replaced(operator: httpx.AsyncClient) -> None:
    ours = await operator.get("/healthz", headers={"X-Request-ID": "5f0c-ab:12.x_y"})
    assert ours.headers["x-request-id"] == "5f0c-ab:12.x_y"
    for bad in (b"two words", b"x" * 65, b"-leading-dash", "é".encode(), b"a\x00b"):
        response = await operator.get("/healthz", headers={"X-Request-ID": bad})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), bad
    generated = await operator.post("/api/v1/tenants", json={"name": "Acme"})
    request_id = generated.headers["x-request-id"]
    assert (await events(operator))[0]["request_id"] == request_id


async def test_a_failing_audit_write_never_fails_the_request(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: AuditService, entries: object) -> None:
        raise RuntimeError("catalog unreachable")

    before = AuditMiddleware.write_failures
    monkeypatch.setattr(AuditService, "record_many", broken)
    response = await operator.post("/api/v1/tenants", json={"name": "Acme"})
    assert response.status_code == 201
    assert AuditMiddleware.write_failures == before + 1
    assert "audit: could not record POST /api/v1/tenants" in caplog.text
    monkeypatch.undo()
    assert (await operator.get(f"/api/v1/tenants/{response.json()['id']}")).status_code == 200
    assert await count_rows(ctx) == 0


def test_objects_are_named_after_their_collection() -> None:
    from app.audit.middleware import _object_of

    assert _object_of("/api/v1/restores/{restore_id}/approve", {"restore_id": "r1"}) == ("restore", "r1")
    assert _object_of("/api/v1/policies/{policy_id}", {"policy_id": uuid.UUID(int=1)}) == (
        "policy",
        str(uuid.UUID(int=1)),
    )
    assert _object_of("/api/v1/change-requests", {}) == ("change-request", None)
    assert _object_of("/api/v1/agent/jobs/claim", {}) == ("job", None)
    assert _object_of("/api/v1/agent/jobs/{job_id}/quiesce/release", {"job_id": "j"}) == ("job", "j")
