"""API keys: shown once, stored hashed, revocable; roles enforced."""

from __future__ import annotations

import hashlib
import uuid

import httpx
from sqlalchemy import select

from app.auth.models import ApiKey
from app.context import AppContext
from tests.support.app import ClientFactory, CustomerFactory


async def test_missing_malformed_and_unknown_keys_are_401(
    anonymous: httpx.AsyncClient, make_client: ClientFactory
) -> None:
    for client in (anonymous, make_client("garbage"), make_client("vmr_0011223344556677_nope")):
        response = await client.get("/api/v1/tenants")
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"] == "Bearer"


async def test_key_is_shown_once_stored_hashed_and_works_until_revoked(
    ctx: AppContext, operator: httpx.AsyncClient, make_client: ClientFactory
) -> None:
    created = await operator.post("/api/v1/api-keys", json={"name": "automation", "role": "operator"})
    assert created.status_code == 201
    body = created.json()
    secret = body["key"]
    assert secret.startswith("vmr_")

    shown = (await operator.get(f"/api/v1/api-keys/{body['id']}")).json()
    assert "key" not in shown
    async with ctx.sessionmaker() as session:
        row = (await session.execute(select(ApiKey).where(ApiKey.id == uuid.UUID(shown["id"])))).scalar_one()
    random_part = secret.split("_", 2)[2]
    assert row.secret_hash == hashlib.sha256(random_part.encode()).hexdigest()
    assert random_part not in (row.secret_hash + row.lookup_id)

    new_client = make_client(secret)
    assert (await new_client.get("/api/v1/tenants")).status_code == 200
    assert (await operator.post(f"/api/v1/api-keys/{body['id']}/revoke")).status_code == 200
    revoked = await new_client.get("/api/v1/tenants")
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]


async def test_customer_key_needs_a_tenant_and_operator_key_must_not_have_one(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    _, tenant_id = await customer_of("Acme")
    no_tenant = await operator.post("/api/v1/api-keys", json={"name": "x", "role": "customer"})
    assert no_tenant.status_code == 422
    with_tenant = await operator.post(
        "/api/v1/api-keys", json={"name": "x", "role": "operator", "tenant_id": str(tenant_id)}
    )
    assert with_tenant.status_code == 422
    unknown_tenant = await operator.post(
        "/api/v1/api-keys",
        json={"name": "x", "role": "customer", "tenant_id": "00000000-0000-0000-0000-000000000001"},
    )
    assert unknown_tenant.status_code == 422
    assert unknown_tenant.json()["errors"][0]["field"] == "tenant_id"


async def test_customers_cannot_create_or_revoke_keys_and_see_only_their_tenants(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    acme, acme_id = await customer_of("Acme")
    globex, _ = await customer_of("Globex")
    created = await acme.post(
        "/api/v1/api-keys", json={"name": "x", "role": "customer", "tenant_id": str(acme_id)}
    )
    assert created.status_code == 403
    acme_keys = (await acme.get("/api/v1/api-keys")).json()["items"]
    assert len(acme_keys) == 1
    assert acme_keys[0]["tenant_id"] == str(acme_id)
    globex_key = (await globex.get("/api/v1/api-keys")).json()["items"][0]
    assert (await acme.get(f"/api/v1/api-keys/{globex_key['id']}")).status_code == 404
    assert (await acme.post(f"/api/v1/api-keys/{globex_key['id']}/revoke")).status_code == 403
    assert (await operator.get("/api/v1/api-keys")).json()["total"] == 3


async def test_a_key_cannot_revoke_itself(operator: httpx.AsyncClient) -> None:
    own = (await operator.get("/api/v1/api-keys")).json()["items"][0]
    response = await operator.post(f"/api/v1/api-keys/{own['id']}/revoke")
    assert response.status_code == 409
