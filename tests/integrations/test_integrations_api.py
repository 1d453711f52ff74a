"""The integrations resource: who may configure what, secrets shown once, tenant isolation."""

from __future__ import annotations

import uuid

import httpx

from app.context import AppContext
from app.crypto import SecretBox
from app.integrations.models import Integration
from tests.integrations.support import create_integration
from tests.support.app import CustomerFactory


async def test_customers_manage_their_tenants_integrations_and_see_the_secret_once(
    ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    acme, acme_id = await customer_of("Acme")
    created = await create_integration(
        acme, url="https://tickets.example.test/hook", events=["restore.completed", "restore.failed"]
    )
    assert created["tenant_id"] == str(acme_id) and created["enabled"] is True
    assert created["url"] == "https://tickets.example.test/hook"
    secret = created["secret"]
    fetched = (await acme.get(f"/api/v1/integrations/{created['id']}")).json()
    assert "secret" not in fetched and secret not in str(fetched)
    listed = (await acme.get("/api/v1/integrations")).json()
    assert [i["id"] for i in listed["items"]] == [created["id"]] and secret not in str(listed)
    # Stored encrypted with the service's key, never in clear.
    async with ctx.sessionmaker() as session:
        row = await session.get(Integration, uuid.UUID(created["id"]))
        assert row is not None and secret.encode() not in row.secret_encrypted
        assert SecretBox("test-secret-key-0123456789").decrypt(row.secret_encrypted).decode() == secret

    changed = await acme.patch(
        f"/api/v1/integrations/{created['id']}", json={"url": None, "enabled": False, "events": []}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] is None and changed.json()["enabled"] is False
    assert changed.json()["name"] == "ServiceNow"
    rotated = (await acme.post(f"/api/v1/integrations/{created['id']}/secret")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret

    duplicate = await acme.post("/api/v1/integrations", json={"name": "ServiceNow"})
    assert duplicate.status_code == 409
    wrong_event = await acme.post("/api/v1/integrations", json={"name": "x", "events": ["alert.opened"]})
    assert wrong_event.status_code == 422 and wrong_event.json()["errors"][0]["field"] == "body.events.0"
    unknown_event = await acme.post("/api/v1/integrations", json={"name": "x", "events": ["restore.maybe"]})
    assert unknown_event.status_code == 422
    ftp = await acme.post("/api/v1/integrations", json={"name": "x", "url": "ftp://files.example.test/"})
    assert ftp.status_code == 422 and ftp.json()["errors"][0]["field"] == "body.url"

    assert (await acme.delete(f"/api/v1/integrations/{created['id']}")).status_code == 204
    assert (await acme.get(f"/api/v1/integrations/{created['id']}")).status_code == 404


async def test_operators_integrations_and_tenant_isolation(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    acme, acme_id = await customer_of("Acme")
    globex, globex_id = await customer_of("Globex")
    # Customers cannot create an operators' integration, nor one for another tenant.
    refused = await acme.post("/api/v1/integrations", json={"name": "alerts", "tenant_id": None})
    assert refused.status_code == 403
    foreign = await acme.post("/api/v1/integrations", json={"name": "x", "tenant_id": str(globex_id)})
    assert foreign.status_code == 422 and foreign.json()["errors"][0]["field"] == "body.tenant_id"

    alerts = await create_integration(operator, name="PagerDuty", events=["alert.opened"])
    assert alerts["tenant_id"] is None
    restore_event = await operator.post(
        "/api/v1/integrations", json={"name": "y", "events": ["restore.completed"]}
    )
    assert restore_event.status_code == 422  # an operators' integration receives alerts
    for_acme = await create_integration(operator, name="Acme desk", tenant_id=str(acme_id))
    assert for_acme["tenant_id"] == str(acme_id)
    missing = await operator.post("/api/v1/integrations", json={"name": "z", "tenant_id": str(uuid.uuid4())})
    assert missing.status_code == 422
    theirs = await create_integration(globex, name="Globex desk")

    # Each customer sees its own tenant's only; operators see all, and may filter.
    assert [i["id"] for i in (await acme.get("/api/v1/integrations")).json()["items"]] == [for_acme["id"]]
    assert (await operator.get("/api/v1/integrations")).json()["total"] == 3
    by_tenant = (await operator.get("/api/v1/integrations", params={"tenant_id": str(globex_id)})).json()
    assert [i["id"] for i in by_tenant["items"]] == [theirs["id"]]
    widened = await acme.get("/api/v1/integrations", params={"tenant_id": str(globex_id)})
    assert widened.json()["total"] == 0

    # Another tenant's integration, or the operators', is simply not there for a customer.
    delivery = str(uuid.uuid4())
    for other in (theirs["id"], alerts["id"]):
        for method, path, body in (
            ("GET", f"/api/v1/integrations/{other}", None),
            ("PATCH", f"/api/v1/integrations/{other}", {"enabled": False}),
            ("DELETE", f"/api/v1/integrations/{other}", None),
            ("POST", f"/api/v1/integrations/{other}/secret", None),
            ("GET", f"/api/v1/integrations/{other}/deliveries", None),
            ("POST", f"/api/v1/integrations/{other}/deliveries/{delivery}/resend", None),
        ):
            response = await acme.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
    assert (await globex.get(f"/api/v1/integrations/{theirs['id']}")).json()["enabled"] is True
    assert (await operator.get(f"/api/v1/integrations/{alerts['id']}")).status_code == 200
    unknown = await operator.post(f"/api/v1/integrations/{for_acme['id']}/deliveries/{delivery}/resend")
    assert unknown.status_code == 404
