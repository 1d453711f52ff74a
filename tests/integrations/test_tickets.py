"""Ticketing webhooks in: signed tickets become restores, once per ticket; refused ones leave no trace."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select

from app.clock import ManualClock
from app.compliance.models import RestoreSla
from app.compliance.recorder import RestoreSlaRecorder
from app.context import AppContext
from app.integrations.signing import sign
from app.restore_points.models import RestorePoint
from tests.compliance.helpers import add_point
from tests.integrations.support import (
    TICKETS,
    counts,
    create_integration,
    new_vm_ticket,
    send_ticket,
    signed,
    ticket_tenant,
)
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim


async def test_a_signed_ticket_becomes_a_restore_whose_sla_starts_with_the_ticket(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer)
    assert integration["secret"].startswith("whsec_")
    assert integration["inbound_url"] == f"{TICKETS}?integration={integration['id']}"
    now = ctx.clock.now()
    opened = now - timedelta(minutes=40)
    vm = acme.vms[0]
    # Between the second and the third point: the second is the one taken at or before.
    between = acme.points[1][1] + timedelta(hours=3)
    response = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-1", opened, point_in_time=between.isoformat()), now
    )
    assert response.status_code == 202, response.text
    restore = response.json()
    assert restore["restore_point_id"] == str(acme.points[1][0])
    assert restore["ticket_id"] == "INC-1" and restore["integration_id"] == integration["id"]
    assert restore["state"] == "requested" and restore["target"] == "new"
    assert restore["requested_at"].replace("Z", "+00:00") == opened.isoformat()
    # The customer sees it like any other restore; its SLA clocks run from the ticket's opening.
    listed = (await acme.customer.get("/api/v1/restores")).json()
    assert [r["id"] for r in listed["items"]] == [restore["id"]]
    await RestoreSlaRecorder(ctx.sessionmaker, ctx.clock).run_once()
    async with ctx.sessionmaker() as session:
        sla = (await session.execute(select(RestoreSla))).scalar_one()
    assert sla.initiation_deadline_at == opened + timedelta(hours=2)

    # An exact point works too; a point_in_time before every point finds none (404).
    exact = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-2", now, restore_point_id=str(acme.points[2][0])), now
    )
    assert exact.status_code == 202 and exact.json()["restore_point_id"] == str(acme.points[2][0])
    early = acme.points[0][1] - timedelta(seconds=1)
    none = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-3", now, point_in_time=early.isoformat()), now
    )
    assert none.status_code == 404 and "at or before" in none.json()["detail"]
    assert (await counts(ctx))["restores"] == 2


async def test_point_in_time_takes_the_kind_the_restore_needs(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer)
    now = ctx.clock.now()
    vm = acme.vms[0]
    # The newest point is an application point: a whole-VM restore skips it.
    async with ctx.sessionmaker.begin() as session:
        point = await session.get(RestorePoint, acme.points[2][0])
        assert point is not None
        point.kind = "application"
    response = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-9", now, point_in_time=now.isoformat()), now
    )
    assert response.status_code == 202, response.text
    assert response.json()["restore_point_id"] == str(acme.points[1][0])


async def test_replayed_messages_and_retried_tickets_return_the_first_restore(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer)
    now = ctx.clock.now()
    ticket = new_vm_ticket(acme.vms[0], "INC-7", now, point_in_time=now.isoformat())
    first = await send_ticket(anonymous, integration, ticket, now, message_id="msg_first")
    assert first.status_code == 202, first.text
    replay = await send_ticket(anonymous, integration, ticket, now, message_id="msg_first")
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    # The same message id for another ticket is the sender's mistake, not a replay: 409.
    other = new_vm_ticket(acme.vms[1], "INC-9", now, point_in_time=now.isoformat())
    reused = await send_ticket(anonymous, integration, other, now, message_id="msg_first")
    assert reused.status_code == 409 and "INC-7" in reused.json()["detail"], reused.text
    clock.advance(timedelta(minutes=1))  # the ticketing system retries later, as a new message
    retried = await send_ticket(anonymous, integration, ticket, clock.now(), message_id="msg_second")
    assert retried.status_code == 200 and retried.json()["id"] == first.json()["id"]
    assert await counts(ctx) == {"restores": 1, "webhook_receipts": 2, "webhook_deliveries": 0}

    # Deliveries of one new ticket racing each other: one restore. A loser that found no restore
    # yet when it looked gets 409 (on PostgreSQL), and its retry gets the winner's restore.
    racing = new_vm_ticket(acme.vms[0], "INC-8", now, point_in_time=now.isoformat())
    answers = await asyncio.gather(
        *(send_ticket(anonymous, integration, racing, clock.now()) for _ in range(3))
    )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(202) == 1 and set(codes) <= {200, 202, 409}, [a.text for a in answers]
    winner = next(a.json()["id"] for a in answers if a.status_code == 202)
    assert all(a.json()["id"] == winner for a in answers if a.status_code == 200)
    again = await send_ticket(anonymous, integration, racing, clock.now())
    assert again.status_code == 200 and again.json()["id"] == winner
    assert (await counts(ctx))["restores"] == 2


async def test_refused_messages_are_401_logged_and_create_nothing(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer)
    disabled = await create_integration(acme.customer, name="Old", enabled=False)
    now = ctx.clock.now()
    ticket = new_vm_ticket(acme.vms[0], "INC-SECRET-BODY", now, point_in_time=now.isoformat())
    body = json.dumps(ticket).encode()
    good = signed(integration["secret"], body, now)
    other_secret = (await create_integration(acme.customer, name="Other"))["secret"]

    def without(name: str) -> dict[str, str]:
        return {k: v for k, v in good.items() if k != name}

    cases: dict[str, tuple[dict[str, str], bytes, str]] = {
        "another secret": (signed(other_secret, body, now), body, integration["id"]),
        "tampered body": (good, body.replace(b"INC-SECRET", b"INC-OTHER"), integration["id"]),
        "no webhook-id": (without("webhook-id"), body, integration["id"]),
        "no webhook-timestamp": (without("webhook-timestamp"), body, integration["id"]),
        "no webhook-signature": (without("webhook-signature"), body, integration["id"]),
        "6 minutes old": (
            signed(integration["secret"], body, now - timedelta(minutes=6)),
            body,
            integration["id"],
        ),
        "6 minutes ahead": (
            signed(integration["secret"], body, now + timedelta(minutes=6)),
            body,
            integration["id"],
        ),
        "timestamp not a number": ({**good, "webhook-timestamp": "yesterday"}, body, integration["id"]),
        "signature without a comma": ({**good, "webhook-signature": "v1"}, body, integration["id"]),
        "signature not base64": ({**good, "webhook-signature": "v1,!!!not-base64"}, body, integration["id"]),
        "only another version": (
            {**good, "webhook-signature": good["webhook-signature"].replace("v1,", "v2,")},
            body,
            integration["id"],
        ),
        "unknown integration": (good, body, str(uuid.uuid4())),
        "disabled integration": (signed(disabled["secret"], body, now), body, disabled["id"]),
    }
    for case, (headers, content, integration_id) in cases.items():
        response = await anonymous.post(
            TICKETS, params={"integration": integration_id}, content=content, headers=headers
        )
        assert response.status_code == 401, (case, response.text)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert problem["title"] == "Unauthorized" and "could not be authenticated" in problem["detail"], case
    warnings = [
        r for r in caplog.records if r.levelno == logging.WARNING and "ticket webhook refused" in r.message
    ]
    assert len(warnings) == len(cases)
    assert any(integration["id"] in r.message and "old" in r.message for r in warnings)
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("app"))
    assert "INC-SECRET-BODY" not in ours  # never the body...
    assert integration["secret"] not in caplog.text and other_secret not in caplog.text  # ...nor a secret
    assert await counts(ctx) == {"restores": 0, "webhook_receipts": 0, "webhook_deliveries": 0}

    # The audit log names the integration each refused message was sent to; its tenant sees them.
    refused = (
        await operator.get(
            "/api/v1/audit-events", params={"action": "POST /api/v1/webhooks/tickets", "limit": 100}
        )
    ).json()["items"]
    assert len(refused) == len(cases) and {e["status"] for e in refused} == {401}
    against = {e["object_id"] for e in refused if e["object_type"] == "integration"}
    assert against == {integration["id"], disabled["id"], cases["unknown integration"][2]}
    assert {e["tenant_id"] for e in refused if e["object_id"] != cases["unknown integration"][2]} == {
        str(acme.tenant_id)
    }
    seen_by_customer = (
        await acme.customer.get("/api/v1/audit-events", params={"action": "POST /api/v1/webhooks/tickets"})
    ).json()
    assert seen_by_customer["total"] == len(cases) - 1  # not the message for an unknown integration

    # A message within the tolerance either way is fine.
    later = signed(integration["secret"], body, now + timedelta(minutes=4))
    accepted = await anonymous.post(
        TICKETS, params={"integration": integration["id"]}, content=body, headers=later
    )
    assert accepted.status_code == 202, accepted.text


async def test_malformed_tickets_are_422_and_unknown_objects_404(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    globex = await ticket_tenant(ctx, operator, customer_of, vcsim, "Globex")
    integration = await create_integration(acme.customer)
    now = ctx.clock.now()
    vm = acme.vms[0]
    good = new_vm_ticket(vm, "INC-1", now, point_in_time=now.isoformat())

    async def field_of(ticket: dict[str, object]) -> str:
        response = await send_ticket(anonymous, integration, ticket, now)
        assert response.status_code == 422, response.text
        return str(response.json()["errors"][0]["field"])

    assert await field_of({k: v for k, v in good.items() if k != "vm_id"}) == "body.vm.vm_id"
    assert await field_of({**good, "vm_id": "not-a-uuid"}) == "body.vm.vm_id"
    assert await field_of({**good, "created_at": "2026-01-01T00:00:00"}) == "body.vm.created_at"  # no offset
    assert await field_of({**good, "colour": "red"}) == "body.vm.colour"
    assert await field_of({**good, "target": "elsewhere"}) == "body.vm.target"
    assert await field_of({**good, "type": "snapshot"}) == "body"
    assert await field_of({**good, "restore_point_id": str(acme.points[0][0])}) == "body.vm"  # both given
    future = {**good, "created_at": (now + timedelta(hours=1)).isoformat()}
    assert await field_of(future) == "body.created_at"
    # Instants out of range (an SLA starting in year 1 could never be reported) are refused.
    assert await field_of({**good, "created_at": "0001-01-01T00:00:00+01:00"}) == "body.vm.created_at"
    assert await field_of({**good, "created_at": "0001-01-01T00:00:00Z"}) == "body.vm.created_at"
    assert await field_of({**good, "point_in_time": "9999-12-31T23:30:00-05:00"}) == "body.vm.point_in_time"
    bad_host = {**good, "new_vm": {**good["new_vm"], "host_id": str(uuid.uuid4())}}
    assert await field_of(bad_host) == "body.new_vm.host_id"  # the restore's own rules apply

    for ticket in (
        {**good, "vm_id": str(uuid.uuid4())},
        {**good, "vm_id": globex.vms[0]["id"]},  # another tenant's VM
        {**good, "point_in_time": None, "restore_point_id": str(globex.points[0][0])},
        {**good, "point_in_time": None, "restore_point_id": str(uuid.uuid4())},
    ):
        response = await send_ticket(anonymous, integration, ticket, now)
        assert response.status_code == 404, response.text
    assert (await counts(ctx))["restores"] == 0
    assert (await counts(ctx))["webhook_receipts"] == 0

    # The same message id, once the ticket is fixed, is processed: refusals leave no receipt.
    wrong = await send_ticket(
        anonymous, integration, {**good, "vm_id": str(uuid.uuid4())}, now, message_id="msg_fixed"
    )
    assert wrong.status_code == 404
    fixed = await send_ticket(anonymous, integration, good, now, message_id="msg_fixed")
    assert fixed.status_code == 202, fixed.text


async def test_operator_integrations_and_rotated_secrets_cannot_request_restores(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    now = ctx.clock.now()
    ticket = new_vm_ticket(acme.vms[0], "INC-1", now, point_in_time=now.isoformat())
    alerts = await create_integration(operator, name="PagerDuty")
    assert alerts["tenant_id"] is None and alerts["inbound_url"] is None
    refused = await send_ticket(anonymous, alerts, ticket, now)
    assert refused.status_code == 403, refused.text

    integration = await create_integration(acme.customer)
    rotated = (await acme.customer.post(f"/api/v1/integrations/{integration['id']}/secret")).json()
    assert rotated["secret"] != integration["secret"]
    old = await send_ticket(anonymous, integration, ticket, now)
    assert old.status_code == 401
    new = await send_ticket(anonymous, integration, ticket, now, secret=rotated["secret"])
    assert new.status_code == 202, new.text
    assert (await counts(ctx))["restores"] == 1


async def test_a_point_of_the_ticket_vm_is_taken_even_from_an_older_point(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
) -> None:
    """point_in_time picks among the ticket's VM's points only, never another VM's newer one."""
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer)
    now = ctx.clock.now()
    await add_point(ctx, acme.vms[1]["id"], now - timedelta(hours=1))
    response = await send_ticket(
        anonymous, integration, new_vm_ticket(acme.vms[0], "INC-1", now, point_in_time=now.isoformat()), now
    )
    assert response.status_code == 202 and response.json()["restore_point_id"] == str(acme.points[2][0])
    assert response.json()["vm_id"] == acme.vms[0]["id"]
    # And the signature covers exactly the bytes sent (no re-encoding on the way).
    body = json.dumps(
        new_vm_ticket(acme.vms[0], "INC-2", now, point_in_time=now.isoformat()), indent=2
    ).encode()
    headers = {**sign(integration["secret"], "msg_pretty", now, body), "content-type": "application/json"}
    pretty = await anonymous.post(
        TICKETS, params={"integration": integration["id"]}, content=body, headers=headers
    )
    assert pretty.status_code == 202, pretty.text
