"""vCenters: registration, encrypted credentials, connection tests and errors, against vcsim."""

from __future__ import annotations

import logging
import uuid

import httpx
import pytest
from sqlalchemy import select

from app.context import AppContext
from app.vcenters.models import VCenter
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp.reference import closed_port

pytestmark = pytest.mark.vcsim

SECRET_PASSWORD = "s3cr3t-Pa55word-do-not-leak"


async def register(
    operator: httpx.AsyncClient,
    tenant_id: uuid.UUID,
    url: str,
    *,
    name: str = "vc1",
    username: str = "user",
    password: str = "pass",
    verify_tls: bool | None = None,
) -> dict:
    body: dict = {
        "tenant_id": str(tenant_id),
        "name": name,
        "url": url,
        "username": username,
        "password": password,
    }
    if verify_tls is not None:
        body["verify_tls"] = verify_tls
    response = await operator.post("/api/v1/vcenters", json=body)
    assert response.status_code == 201, response.text
    return response.json()


async def test_credentials_are_encrypted_at_rest_and_never_returned(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    _, tenant_id = await customer_of("Acme")
    vc = await register(
        operator, tenant_id, vcsim.url, username="administrator@vsphere.local", password=SECRET_PASSWORD
    )
    assert vc["verify_tls"] is True  # on by default
    assert vc["connection_status"] == "unknown"
    for response in (
        vc,
        (await operator.get(f"/api/v1/vcenters/{vc['id']}")).json(),
        (await operator.get("/api/v1/vcenters")).json(),
    ):
        assert SECRET_PASSWORD not in str(response)
        assert "administrator@vsphere.local" not in str(response)
    async with ctx.sessionmaker() as session:
        row = (await session.execute(select(VCenter))).scalar_one()
    assert SECRET_PASSWORD.encode() not in row.credentials_encrypted
    assert b"administrator" not in row.credentials_encrypted
    assert SECRET_PASSWORD not in caplog.text


async def test_connection_test_succeeds_and_is_recorded(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, vcsim.url)
    result = await operator.post(f"/api/v1/vcenters/{vc['id']}/test")
    assert result.status_code == 200
    assert result.json()["ok"] is True
    assert result.json()["error"] is None
    shown = (await operator.get(f"/api/v1/vcenters/{vc['id']}")).json()
    assert shown["connection_status"] == "connected"
    assert shown["api_version"]
    assert shown["instance_uuid"]


async def test_unreachable_vcenter_gives_a_clear_error_and_the_api_keeps_working(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, f"http://127.0.0.1:{closed_port()}/sdk")
    result = (await operator.post(f"/api/v1/vcenters/{vc['id']}/test")).json()
    assert result["ok"] is False
    assert result["error"]["kind"] == "unreachable"
    assert "127.0.0.1" in result["error"]["message"]

    sync = await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")
    assert sync.status_code == 502
    assert sync.headers["content-type"] == "application/problem+json"
    assert sync.json()["kind"] == "unreachable"

    shown = (await operator.get(f"/api/v1/vcenters/{vc['id']}")).json()
    assert shown["connection_status"] == "error"
    assert shown["last_error_kind"] == "unreachable"
    assert shown["last_sync_status"] == "failed"
    assert (await operator.get("/api/v1/tenants")).status_code == 200
    # The failed sync released its claim: a retry is attempted, not refused as "already syncing".
    assert (await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")).status_code == 502


async def test_wrong_credentials_are_reported_without_leaking_the_password(
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim_factory: VcsimFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    server = vcsim_factory(extra_args=["-username", "backup", "-password", "right-password"])
    _, tenant_id = await customer_of("Acme")
    vc = await register(operator, tenant_id, server.url, username="backup", password=SECRET_PASSWORD)
    result = (await operator.post(f"/api/v1/vcenters/{vc['id']}/test")).json()
    assert result["ok"] is False
    assert result["error"]["kind"] == "auth_failed"
    sync = await operator.post(f"/api/v1/vcenters/{vc['id']}/sync")
    assert sync.status_code == 502
    assert sync.json()["kind"] == "auth_failed"
    assert SECRET_PASSWORD not in sync.text + str(result) + caplog.text

    fixed = await operator.patch(
        f"/api/v1/vcenters/{vc['id']}", json={"username": "backup", "password": "right-password"}
    )
    assert fixed.status_code == 200
    assert fixed.json()["connection_status"] == "unknown"
    assert (await operator.post(f"/api/v1/vcenters/{vc['id']}/test")).json()["ok"] is True


async def test_untrusted_certificate_is_refused_unless_verification_is_turned_off(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim_tls: VcsimServer
) -> None:
    _, tenant_id = await customer_of("Acme")
    strict = await register(operator, tenant_id, vcsim_tls.url, name="strict")
    result = (await operator.post(f"/api/v1/vcenters/{strict['id']}/test")).json()
    assert result["ok"] is False
    assert result["error"]["kind"] == "tls_untrusted"
    assert "verify_tls" in result["error"]["message"]

    lab = await register(operator, tenant_id, vcsim_tls.url, name="lab", verify_tls=False)
    assert (await operator.post(f"/api/v1/vcenters/{lab['id']}/test")).json()["ok"] is True


async def test_bad_registrations_are_rejected_and_change_nothing(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    customer, tenant_id = await customer_of("Acme")
    base = {"tenant_id": str(tenant_id), "name": "vc", "username": "u", "password": "p"}
    for url in ("ftp://vc", "not a url", "https://user:pw@vc.example.com", "https://"):
        response = await operator.post("/api/v1/vcenters", json={**base, "url": url})
        assert response.status_code == 422, url
        assert response.json()["errors"][0]["field"] == "body.url"
    missing_tenant = await operator.post(
        "/api/v1/vcenters", json={**base, "url": vcsim.url, "tenant_id": str(uuid.uuid4())}
    )
    assert missing_tenant.status_code == 422
    assert (await customer.post("/api/v1/vcenters", json={**base, "url": vcsim.url})).status_code == 403
    await register(operator, tenant_id, vcsim.url, name="vc")
    dup = await operator.post("/api/v1/vcenters", json={**base, "url": vcsim.url})
    assert dup.status_code == 409
    assert (await operator.get("/api/v1/vcenters")).json()["total"] == 1


async def test_customers_see_only_their_vcenters(
    operator: httpx.AsyncClient, customer_of: CustomerFactory, vcsim: VcsimServer
) -> None:
    acme, acme_id = await customer_of("Acme")
    globex, globex_id = await customer_of("Globex")
    acme_vc = await register(operator, acme_id, vcsim.url, name="acme-vc")
    globex_vc = await register(operator, globex_id, vcsim.url, name="globex-vc")
    assert [v["id"] for v in (await acme.get("/api/v1/vcenters")).json()["items"]] == [acme_vc["id"]]
    assert (await acme.get(f"/api/v1/vcenters/{globex_vc['id']}")).status_code == 404
    assert (await acme.get(f"/api/v1/vcenters/{acme_vc['id']}")).status_code == 200
    assert (await globex.post(f"/api/v1/vcenters/{acme_vc['id']}/sync")).status_code == 403
    assert (await acme.delete(f"/api/v1/vcenters/{acme_vc['id']}")).status_code == 403
