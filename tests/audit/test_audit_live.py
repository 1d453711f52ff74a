"""Over a real server: the audit row is written after the response, so a slow catalog write
does not slow the caller down.

The audit write is held until the test has its response: were the response waiting for the
write, the request would never finish, which the timeout turns into a failure. No wall-clock
figure is asserted, so a slow machine cannot fail the test."""

from __future__ import annotations

import asyncio

import pytest

from app.audit.schemas import AuditEntry
from app.audit.service import AuditService
from app.auth.principal import Role
from app.context import AppContext
from tests.api.test_events import Served, served
from tests.support.app import create_key

__all__ = ["served"]


async def test_the_audit_write_does_not_delay_the_response(
    ctx: AppContext, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    record_many = AuditService.record_many
    release = asyncio.Event()

    async def held(self: AuditService, entries: list[AuditEntry]) -> None:
        await release.wait()
        await record_many(self, entries)

    monkeypatch.setattr(AuditService, "record_many", held)
    operator = served.client(await create_key(ctx, Role.OPERATOR))
    response = await asyncio.wait_for(operator.post("/api/v1/tenants", json={"name": "Acme"}), timeout=30)
    assert response.status_code == 201
    assert (await operator.get("/api/v1/audit-events")).json()["total"] == 0
    release.set()
    request_id = response.headers["x-request-id"]
    for _ in range(50):
        page = (await operator.get("/api/v1/audit-events")).json()
        if page["total"]:
            break
        await asyncio.sleep(0.1)
    assert [e["request_id"] for e in page["items"]] == [request_id]
