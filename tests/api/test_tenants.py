"""Tenants: operators manage them; customers see only their own."""

from __future__ import annotations

import httpx

from tests.support.app import CustomerFactory

PROBLEM = "application/problem+json"


async def test_operator_creates_lists_renames_and_deletes_a_tenant(operator: httpx.AsyncClient) -> None:
    created = await operator.post("/api/v1/tenants", json={"name": "Acme"})
    assert created.status_code == 201
    tenant = created.json()
    assert tenant["name"] == "Acme"

    listed = (await operator.get("/api/v1/tenants")).json()
    assert listed["total"] == 1
    assert listed["items"][0]["id"] == tenant["id"]

    renamed = await operator.patch(f"/api/v1/tenants/{tenant['id']}", json={"name": "Acme Corp"})
    assert renamed.status_code == 200
    assert renamed.json()["name"] == "Acme Corp"

    assert (await operator.delete(f"/api/v1/tenants/{tenant['id']}")).status_code == 204
    gone = await operator.get(f"/api/v1/tenants/{tenant['id']}")
    assert gone.status_code == 404
    assert gone.headers["content-type"] == PROBLEM


async def test_duplicate_tenant_name_is_a_conflict_and_changes_nothing(operator: httpx.AsyncClient) -> None:
    assert (await operator.post("/api/v1/tenants", json={"name": "Acme"})).status_code == 201
    dup = await operator.post("/api/v1/tenants", json={"name": "Acme"})
    assert dup.status_code == 409
    body = dup.json()
    assert body["status"] == 409
    assert "already exists" in body["detail"]
    assert (await operator.get("/api/v1/tenants")).json()["total"] == 1


async def test_tenant_that_owns_objects_cannot_be_deleted(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    _, tenant_id = await customer_of("Acme")  # owns an active customer key now
    refused = await operator.delete(f"/api/v1/tenants/{tenant_id}")
    assert refused.status_code == 409
    assert "1 active API keys" in refused.json()["detail"]
    assert (await operator.get(f"/api/v1/tenants/{tenant_id}")).status_code == 200

    keys = (await operator.get("/api/v1/api-keys", params={"tenant_id": str(tenant_id)})).json()["items"]
    for key in keys:
        assert (await operator.post(f"/api/v1/api-keys/{key['id']}/revoke")).status_code == 200
    assert (await operator.delete(f"/api/v1/tenants/{tenant_id}")).status_code == 204


async def test_customer_sees_only_its_tenant_and_cannot_manage_tenants(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    acme, acme_id = await customer_of("Acme")
    _, globex_id = await customer_of("Globex")

    listed = (await acme.get("/api/v1/tenants")).json()
    assert [t["id"] for t in listed["items"]] == [str(acme_id)]
    assert (await acme.get(f"/api/v1/tenants/{acme_id}")).status_code == 200
    assert (await acme.get(f"/api/v1/tenants/{globex_id}")).status_code == 404

    forbidden = await acme.post("/api/v1/tenants", json={"name": "Mine"})
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == PROBLEM
    assert (await acme.patch(f"/api/v1/tenants/{acme_id}", json={"name": "x"})).status_code == 403
    assert (await acme.delete(f"/api/v1/tenants/{globex_id}")).status_code == 403
    assert (await operator.get("/api/v1/tenants")).json()["total"] == 2


async def test_validation_errors_name_the_field_and_unknown_fields_are_rejected(
    operator: httpx.AsyncClient,
) -> None:
    missing = await operator.post("/api/v1/tenants", json={})
    assert missing.status_code == 422
    assert missing.json()["errors"][0]["field"] == "body.name"

    unknown = await operator.post("/api/v1/tenants", json={"name": "Acme", "colour": "red"})
    assert unknown.status_code == 422
    assert unknown.json()["errors"][0]["field"] == "body.colour"
    assert "unknown field" in unknown.json()["detail"]
    assert (await operator.get("/api/v1/tenants")).json()["total"] == 0

    bad_id = await operator.get("/api/v1/tenants/not-a-uuid")
    assert bad_id.status_code == 422
    assert bad_id.json()["errors"][0]["field"] == "path.tenant_id"


async def test_pagination_is_stable_and_counts_everything(operator: httpx.AsyncClient) -> None:
    for i in range(7):
        assert (await operator.post("/api/v1/tenants", json={"name": f"t{i:02d}"})).status_code == 201
    first = (await operator.get("/api/v1/tenants", params={"limit": 3})).json()
    second = (await operator.get("/api/v1/tenants", params={"limit": 3, "offset": 3})).json()
    third = (await operator.get("/api/v1/tenants", params={"limit": 3, "offset": 6})).json()
    names = [t["name"] for page in (first, second, third) for t in page["items"]]
    assert names == [f"t{i:02d}" for i in range(7)]
    assert first["total"] == 7
    assert (await operator.get("/api/v1/tenants", params={"limit": 0})).status_code == 422
    assert (await operator.get("/api/v1/tenants", params={"q": "t0"})).json()["total"] == 7


async def test_a_nul_character_is_refused_not_a_server_error(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    """PostgreSQL cannot store NUL in text: the request is a 422 and nothing is written. SQLite
    stores it as given (nothing to refuse there); neither answers 500."""
    customer, _ = await customer_of("Acme")
    dialect_refuses = None
    for client, method, url, kwargs in (
        (operator, "POST", "/api/v1/tenants", {"json": {"name": "a\u0000b"}}),
        (customer, "GET", "/api/v1/vms", {"params": {"q": "\u0000"}}),
        (customer, "POST", "/api/v1/integrations", {"json": {"name": "a\u0000b"}}),
    ):
        response = await client.request(method, url, **kwargs)
        assert response.status_code != 500, (url, response.text)
        refused = response.status_code == 422
        dialect_refuses = refused if dialect_refuses is None else dialect_refuses
        assert refused == dialect_refuses, (url, response.text)  # one rule per database
        if refused:
            assert response.headers["content-type"] == PROBLEM and "NUL" in response.json()["detail"]
    if dialect_refuses:
        names = [t["name"] for t in (await operator.get("/api/v1/tenants")).json()["items"]]
        assert names == ["Acme"]
