"""Outbound messages to a real HTTP receiver: signed, in order per restore, retried, failed, resent."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from app.clock import ManualClock
from app.compliance.recorder import RestoreSlaRecorder
from app.context import AppContext
from app.integrations.deliverer import DeliveryLoop, backoff
from app.integrations.emitter import EventEmitterLoop
from app.integrations.models import Delivery
from app.integrations.outbox import emit_alert_event
from tests.api.test_jobs import claim
from tests.api.test_proxies import register_proxy
from tests.integrations.support import (
    Receiver,
    check_signature,
    counts,
    create_integration,
    deliverer,
    loops,
    new_vm_ticket,
    send_ticket,
    ticket_tenant,
)
from tests.support.app import ClientFactory, CustomerFactory
from tests.support.vcsim import VcsimServer

pytestmark = pytest.mark.vcsim


def iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def deliveries(client: httpx.AsyncClient, integration_id: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/integrations/{integration_id}/deliveries", params=params)
    assert response.status_code == 200, response.text
    return response.json()["items"]  # type: ignore[no-any-return]


async def test_a_restores_life_is_delivered_in_order_signed_and_retried(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
    make_client: ClientFactory,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer, url=receiver.url)
    secret = integration["secret"]
    emitter, sender = loops(ctx)
    now = clock.now()
    vm = acme.vms[0]
    created = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-42", now, point_in_time=now.isoformat()), now
    )
    assert created.status_code == 202, created.text
    restore_id = created.json()["id"]

    # The receiver is down for the first two attempts: the accepted event is retried, with backoff.
    receiver.fail_next(2)
    await emitter.run_once()
    await emitter.run_once()  # idempotent: still one message
    assert (await counts(ctx))["webhook_deliveries"] == 1
    await sender.run_once()
    assert receiver.types() == ["restore.accepted"]
    (log,) = await deliveries(acme.customer, integration["id"])
    assert log["state"] == "pending" and log["attempts"] == 1 and log["last_status"] == 500
    assert "receiver says no" in log["last_error"]
    assert iso(log["next_attempt_at"]) == now + timedelta(seconds=10)
    await sender.run_once()  # not due yet: nothing is sent
    assert len(receiver.requests) == 1
    clock.advance(timedelta(seconds=10))
    await sender.run_once()
    (log,) = await deliveries(acme.customer, integration["id"])
    assert iso(log["next_attempt_at"]) == clock.now() + timedelta(seconds=20)
    clock.advance(timedelta(seconds=20))
    await sender.run_once()
    (log,) = await deliveries(acme.customer, integration["id"])
    assert log["state"] == "delivered" and log["attempts"] == 3 and log["last_status"] == 204
    first, second, third = receiver.requests
    assert first.message_id == second.message_id == third.message_id == log["message_id"]
    assert first.headers["webhook-timestamp"] != third.headers["webhook-timestamp"]  # signed per attempt
    for received in receiver.requests:
        check_signature(secret, received)
    accepted = third.json
    assert accepted["type"] == "restore.accepted"
    assert accepted["data"]["restore_id"] == restore_id and accepted["data"]["ticket_id"] == "INC-42"
    assert accepted["data"]["vm"] == {"id": vm["id"], "name": vm["name"]}
    assert accepted["data"]["state"] == "requested"
    assert iso(accepted["timestamp"]) == now

    # A proxy starts it late (the initiation clock is at risk), reports 60 %, then finishes.
    clock.advance(timedelta(minutes=100))
    await RestoreSlaRecorder(ctx.sessionmaker, clock).run_once()
    proxy = make_client((await register_proxy(operator, "p", [vm["host"]["id"]]))["token"])
    (job,) = [j for j in await claim(proxy) if j["kind"] == "restore"]
    progress = {"phase": "writing", "bytes_total": 1000, "bytes_read": 600}
    assert (
        await proxy.post(f"/api/v1/agent/jobs/{job['job_id']}/progress", json=progress)
    ).status_code == 200
    await emitter.run_once()
    clock.advance(timedelta(minutes=1))
    done = {"outcome": "succeeded", "restore": {"vm_moid": "vm-99", "vm_name": "restored"}}
    assert (await proxy.post(f"/api/v1/agent/jobs/{job['job_id']}/complete", json=done)).status_code == 204
    await RestoreSlaRecorder(ctx.sessionmaker, clock).run_once()
    await emitter.run_once()
    # A failure in the middle holds the later messages back until it is delivered.
    receiver.fail_next(1)
    await sender.run_once()
    assert receiver.types()[3:] == ["restore.sla_at_risk"]
    clock.advance(timedelta(seconds=10))
    await sender.run_once()
    assert receiver.types()[3:] == [
        "restore.sla_at_risk",
        "restore.sla_at_risk",
        "restore.initiated",
        "restore.progress",
        "restore.progress",
        "restore.completed",
    ]
    bodies = [r.json for r in receiver.requests[4:]]
    assert bodies[0]["data"]["clock"] == "initiation"
    assert [b["data"].get("milestone") for b in bodies[2:4]] == [25, 50]
    assert bodies[-1]["data"]["state"] == "succeeded" and bodies[-1]["data"]["clocks"]["completed_at"]
    for received in receiver.requests:
        check_signature(secret, received)
    every = await deliveries(acme.customer, integration["id"])
    assert [d["sequence"] for d in every] == [6, 5, 4, 3, 2, 1]  # newest first
    assert {d["state"] for d in every} == {"delivered"}
    assert await deliveries(acme.customer, integration["id"], state="pending") == []
    # Nothing new happened: nothing new is emitted or sent.
    await emitter.run_once()
    await sender.run_once()
    assert len(receiver.requests) == 9


async def test_a_message_fails_after_a_day_of_backoff_and_can_be_resent(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer, url=receiver.url, events=["restore.accepted"])
    other = await create_integration(acme.customer, name="chat", url=receiver.url, events=["restore.failed"])
    vm = acme.vms[0]
    emitter, sender = loops(ctx)
    created = await acme.customer.post(
        "/api/v1/restores",
        json={
            "restore_point_id": str(acme.points[2][0]),
            "target": "new",
            "new_vm": {
                "name": "copy",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    assert created.status_code == 202, created.text
    await emitter.run_once()
    assert await deliveries(acme.customer, other["id"]) == []  # its filter admits no such event
    receiver.default_status = 503
    start = clock.now()
    waits = []
    while True:
        await sender.run_once()
        (log,) = await deliveries(acme.customer, integration["id"])
        if log["state"] != "pending":
            break
        waits.append(iso(log["next_attempt_at"]) - clock.now())
        clock.set(iso(log["next_attempt_at"]))
    assert log["state"] == "failed" and log["last_status"] == 503
    assert clock.now() == start + timedelta(days=1)  # the last attempt is at the end of the day
    assert waits[:4] == [timedelta(seconds=s) for s in (10, 20, 40, 80)]
    assert max(waits) == timedelta(hours=1) == backoff(30)
    assert log["attempts"] == len(receiver.requests) == len(waits) + 1
    assert len({r.message_id for r in receiver.requests}) == 1

    # Resent while the receiver still fails: the backoff starts again from ten seconds, not
    # from the hour the first day's attempts had reached.
    pending = await acme.customer.post(
        f"/api/v1/integrations/{integration['id']}/deliveries/{log['id']}/resend"
    )
    assert pending.status_code == 202 and pending.json()["state"] == "pending"
    again = await acme.customer.post(
        f"/api/v1/integrations/{integration['id']}/deliveries/{log['id']}/resend"
    )
    assert again.status_code == 409  # already pending
    await sender.run_once()
    (log,) = await deliveries(acme.customer, integration["id"])
    assert log["state"] == "pending" and log["attempts"] == len(waits) + 2
    assert iso(log["next_attempt_at"]) - clock.now() == timedelta(seconds=10)

    # The receiver is back: the same message id, a new attempt.
    receiver.default_status = 200
    clock.set(iso(log["next_attempt_at"]))
    await sender.run_once()
    (log,) = await deliveries(acme.customer, integration["id"])
    assert log["state"] == "delivered" and log["attempts"] == len(waits) + 3
    assert receiver.requests[-1].message_id == log["message_id"]
    check_signature(integration["secret"], receiver.requests[-1])
    assert (
        await acme.customer.post(f"/api/v1/integrations/{integration['id']}/deliveries/{log['id']}/resend")
    ).status_code == 202
    await sender.run_once()
    assert [r.message_id for r in receiver.requests[-2:]] == [log["message_id"]] * 2


async def test_an_unreachable_receiver_is_retried_and_a_disabled_integration_expires(
    ctx: AppContext, operator: httpx.AsyncClient, clock: ManualClock
) -> None:
    # Nothing listens on this port (bound then closed): the connection is refused.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    alerts = await create_integration(operator, name="pager", url=f"http://127.0.0.1:{port}/x")
    async with ctx.sessionmaker.begin() as session:
        queued = await emit_alert_event(
            session, clock.now(), alert_id="a1", event_type="alert.opened", data={"alert_id": "a1"}
        )
        again = await emit_alert_event(
            session, clock.now(), alert_id="a1", event_type="alert.opened", data={"alert_id": "a1"}
        )
    assert (queued, again) == (1, 0)
    sender = deliverer(ctx, clock=clock, timeout_s=2)
    await sender.run_once()
    (log,) = await deliveries(operator, alerts["id"])
    assert log["state"] == "pending" and log["last_status"] is None and "Connect" in log["last_error"]
    # Disabled, it is not sent at all; after its day it fails, so that the log says so.
    assert (
        await operator.patch(f"/api/v1/integrations/{alerts['id']}", json={"enabled": False})
    ).status_code == 200
    clock.advance(timedelta(days=1, seconds=1))
    await sender.run_once()
    (log,) = await deliveries(operator, alerts["id"])
    assert log["state"] == "failed" and log["attempts"] == 1


async def test_two_delivery_loops_never_send_a_message_twice_at_once(
    ctx: AppContext, operator: httpx.AsyncClient, receiver: Receiver, clock: ManualClock
) -> None:
    integration = await create_integration(operator, name="pager", url=receiver.url)
    alert_ids = [str(uuid.uuid4()) for _ in range(6)]
    async with ctx.sessionmaker.begin() as session:
        for alert_id in alert_ids:
            for event in ("alert.opened", "alert.closed"):
                await emit_alert_event(
                    session, clock.now(), alert_id=alert_id, event_type=event, data={"alert_id": alert_id}
                )
    receiver.delay_s = 0.1
    senders = [deliverer(ctx, clock=clock, batch=4) for _ in range(3)]

    async def spin(sender: DeliveryLoop) -> int:
        sent = 0
        for _ in range(6):
            await sender.run_once()
            sent += sender.last_sent
            await asyncio.sleep(0.02)
        return sent

    per_sender = await asyncio.gather(*(spin(s) for s in senders))
    assert sum(per_sender) == 12
    sent = [r.message_id for r in receiver.requests]
    assert len(sent) == len(set(sent)) == 12
    assert max(receiver.max_in_flight.values()) == 1  # one message per subject at a time
    for alert_id in alert_ids:
        types = [r.type for r in receiver.requests if r.json["data"]["alert_id"] == alert_id]
        assert types == ["alert.opened", "alert.closed"]
    log = await deliveries(operator, integration["id"])
    assert {d["state"] for d in log} == {"delivered"} and {d["attempts"] for d in log} == {1}


async def test_racing_emitters_keep_one_message_per_event_in_order(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    await create_integration(acme.customer, url=receiver.url)
    vm = acme.vms[0]
    for name in ("a", "b", "c"):
        created = await acme.customer.post(
            "/api/v1/restores",
            json={
                "restore_point_id": str(acme.points[2][0]),
                "target": "new",
                "new_vm": {
                    "name": name,
                    "host_id": vm["host"]["id"],
                    "datastore_id": vm["datastores"][0]["id"],
                },
            },
        )
        assert created.status_code == 202, created.text
    emitters = [EventEmitterLoop(ctx.sessionmaker, clock) for _ in range(3)]
    await asyncio.gather(*(e.run_once() for e in emitters))
    await asyncio.gather(*(e.run_once() for e in emitters))
    assert (await counts(ctx))["webhook_deliveries"] == 3
    await deliverer(ctx, clock=clock).run_once()
    assert receiver.types() == ["restore.accepted"] * 3


async def test_approval_rejection_and_failure_are_delivered(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
    make_client: ClientFactory,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer, url=receiver.url)
    emitter, sender = loops(ctx)
    now = clock.now()
    vm = acme.vms[0]
    # Over the original (powered-on) VM: the tenant wants an operator's approval first.
    over = {
        "ticket_id": "INC-1",
        "created_at": now.isoformat(),
        "vm_id": vm["id"],
        "restore_point_id": str(acme.points[2][0]),
        "target": "original",
        "force": True,
    }
    waiting = await send_ticket(anonymous, integration, over, now)
    assert waiting.status_code == 202, waiting.text
    assert waiting.json()["state"] == "awaiting_approval"
    rejected = await operator.post(
        f"/api/v1/restores/{waiting.json()['id']}/reject", json={"reason": "use yesterday's point"}
    )
    assert rejected.status_code == 200, rejected.text
    # A second ticket, as a new VM, fails on the proxy.
    failing = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-2", now, point_in_time=now.isoformat()), now
    )
    assert failing.status_code == 202
    proxy = make_client((await register_proxy(operator, "p", [vm["host"]["id"]]))["token"])
    (job,) = [j for j in await claim(proxy) if j["kind"] == "restore"]
    outcome = {"outcome": "failed", "error": "datastore is full", "error_kind": "permanent"}
    assert (await proxy.post(f"/api/v1/agent/jobs/{job['job_id']}/complete", json=outcome)).status_code == 204
    await emitter.run_once()
    await sender.run_once()
    by_ticket: dict[str, list[dict[str, Any]]] = {}
    for received in receiver.requests:
        by_ticket.setdefault(received.json["data"]["ticket_id"], []).append(received.json)
    assert [m["type"] for m in by_ticket["INC-1"]] == [
        "restore.accepted",
        "restore.awaiting_approval",
        "restore.cancelled",
    ]
    assert by_ticket["INC-1"][0]["data"]["state"] == "awaiting_approval"
    assert "use yesterday's point" in by_ticket["INC-1"][-1]["data"]["error"]
    assert [m["type"] for m in by_ticket["INC-2"]] == [
        "restore.accepted",
        "restore.initiated",
        "restore.failed",
    ]
    assert by_ticket["INC-2"][-1]["data"]["error"] == "datastore is full"


async def test_outbound_messages_never_reach_private_addresses_unless_allowed(
    ctx: AppContext, operator: httpx.AsyncClient, receiver: Receiver, clock: ManualClock
) -> None:
    """Server-side request forgery: an integration's URL may not name an internal address (a
    cloud metadata service, an admin page) unless an operator allowed its network. IP literals
    are refused when saved; names are resolved, checked and pinned at each delivery."""
    for url in ("http://169.254.169.254/latest/meta-data", "http://10.1.2.3/x", "http://[fd00::1]:8080/x"):
        refused = await operator.post("/api/v1/integrations", json={"name": "x", "url": url})
        assert refused.status_code == 422, url
        problem = refused.json()
        assert "VMR_WEBHOOK_ALLOWED_NETWORKS" in problem["detail"]
    created = await create_integration(operator, name="pager", url=receiver.url)  # 127.0.0.0/8 allowed
    moved = await operator.patch(
        f"/api/v1/integrations/{created['id']}", json={"url": "http://169.254.169.254/"}
    )
    assert moved.status_code == 422
    assert (await operator.get(f"/api/v1/integrations/{created['id']}")).json()["url"] == receiver.url

    async with ctx.sessionmaker.begin() as session:
        await emit_alert_event(
            session, clock.now(), alert_id="a1", event_type="alert.opened", data={"alert_id": "a1"}
        )
    # A deliverer without the allowance (the service's default) does not send to loopback.
    await DeliveryLoop(ctx.sessionmaker, clock, ctx.box).run_once()
    (log,) = await deliveries(operator, created["id"])
    assert log["state"] == "pending" and log["last_status"] is None
    assert "127.0.0.1 is not a public address" in log["last_error"]
    assert receiver.requests == []

    # A name is checked by what it resolves to, and the request goes to the checked address with
    # the name kept in the Host header.
    port = int(receiver.url.rsplit(":", 1)[1].split("/", 1)[0])
    named = f"http://localhost:{port}/hooks"
    assert (
        await operator.patch(f"/api/v1/integrations/{created['id']}", json={"url": named})
    ).status_code == 200
    clock.advance(timedelta(minutes=10))
    await DeliveryLoop(ctx.sessionmaker, clock, ctx.box).run_once()
    (log,) = await deliveries(operator, created["id"])
    assert "'localhost' resolves to" in log["last_error"] and receiver.requests == []
    clock.advance(timedelta(minutes=10))
    await deliverer(ctx, clock=clock).run_once()
    (log,) = await deliveries(operator, created["id"])
    assert log["state"] == "delivered"
    (request,) = receiver.requests
    assert request.headers["host"] == f"localhost:{port}"


async def test_a_resent_message_waits_while_a_later_one_of_its_subject_is_in_flight(
    ctx: AppContext, operator: httpx.AsyncClient, receiver: Receiver, clock: ManualClock
) -> None:
    integration = await create_integration(operator, name="pager", url=receiver.url)
    async with ctx.sessionmaker.begin() as session:
        for event in ("alert.opened", "alert.closed"):
            await emit_alert_event(
                session, clock.now(), alert_id="a1", event_type=event, data={"alert_id": "a1"}
            )
    sender = deliverer(ctx, clock=clock)
    await sender.run_once()
    await sender.run_once()
    opened, closed = sorted(await deliveries(operator, integration["id"]), key=lambda d: d["sequence"])
    assert (opened["state"], closed["state"]) == ("delivered", "delivered")
    sent = len(receiver.requests)

    # The later message is being sent again (another sender holds its lease) when an operator
    # re-sends the earlier one: the earlier one waits, so the receiver never has both at once.
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == uuid.UUID(closed["id"]))
            .values(state="pending", leased_until=clock.now() + timedelta(seconds=60))
        )
    resent = await operator.post(f"/api/v1/integrations/{integration['id']}/deliveries/{opened['id']}/resend")
    assert resent.status_code == 202
    await sender.run_once()
    assert len(receiver.requests) == sent
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Delivery)
            .where(Delivery.id == uuid.UUID(closed["id"]))
            .values(state="delivered", leased_until=None)
        )
    await sender.run_once()
    assert [r.type for r in receiver.requests[sent:]] == ["alert.opened"]


async def test_a_url_no_request_can_be_built_for_fails_its_own_message_only(
    ctx: AppContext, operator: httpx.AsyncClient, receiver: Receiver, clock: ManualClock
) -> None:
    """A host name with an empty label is refused when saved. One that an earlier version stored
    fails its own message's attempts (with backoff), and the batch's other messages are sent and
    recorded as delivered, once."""
    from app.integrations.models import Integration

    refused = await operator.post(
        "/api/v1/integrations", json={"name": "x", "url": "http://a..b.example/hook"}
    )
    assert refused.status_code == 422 and "not a host name" in refused.json()["detail"], refused.text
    good = await create_integration(operator, name="good", url=receiver.url)
    bad = await create_integration(operator, name="bad", url=receiver.url)
    async with ctx.sessionmaker.begin() as session:
        await session.execute(
            update(Integration)
            .where(Integration.id == uuid.UUID(bad["id"]))
            .values(url="http://a..b.example/hook")
        )
        await emit_alert_event(
            session, clock.now(), alert_id="a1", event_type="alert.opened", data={"alert_id": "a1"}
        )
    sender = deliverer(ctx, clock=clock)
    await sender.run_once()
    assert (sender.last_sent, sender.last_failed) == (1, 1)
    (delivered,) = await deliveries(operator, good["id"])
    assert delivered["state"] == "delivered" and delivered["attempts"] == 1
    (failing,) = await deliveries(operator, bad["id"])
    assert failing["state"] == "pending" and "does not resolve" in failing["last_error"], failing
    clock.advance(timedelta(minutes=2))  # past the lease: nothing is sent twice
    await sender.run_once()
    assert len(receiver.requests) == 1
    (delivered,) = await deliveries(operator, good["id"])
    assert delivered["attempts"] == 1


async def test_sla_events_are_queued_in_the_order_they_happened(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    anonymous: httpx.AsyncClient,
    make_client: ClientFactory,
    receiver: Receiver,
    clock: ManualClock,
) -> None:
    """A ticket opened three hours ago: its restore's initiation clock (2 h, onsite) was at risk
    and breached before the restore existed. A proxy starts it at once. The emitter's first look
    queues the clock's events before 'initiated', without waiting for the SLA recorder."""
    acme = await ticket_tenant(ctx, operator, customer_of, vcsim)
    integration = await create_integration(acme.customer, url=receiver.url)
    emitter, sender = loops(ctx)
    now = clock.now()
    vm = acme.vms[0]
    opened = now - timedelta(hours=3)
    created = await send_ticket(
        anonymous, integration, new_vm_ticket(vm, "INC-7", opened, point_in_time=now.isoformat()), now
    )
    assert created.status_code == 202, created.text
    proxy = make_client((await register_proxy(operator, "p", [vm["host"]["id"]]))["token"])
    assert [j["kind"] for j in await claim(proxy)] == ["restore"]
    await emitter.run_once()
    await sender.run_once()
    assert receiver.types() == [
        "restore.accepted",
        "restore.sla_at_risk",
        "restore.sla_breached",
        "restore.initiated",
    ]
    at_risk, breached = receiver.requests[1].json, receiver.requests[2].json
    assert at_risk["data"]["clock"] == breached["data"]["clock"] == "initiation"
    assert iso(at_risk["timestamp"]) == opened + timedelta(minutes=96)
    assert iso(breached["timestamp"]) == opened + timedelta(hours=2)
    # The recorder's own rows, when it runs, change nothing of what was sent.
    await RestoreSlaRecorder(ctx.sessionmaker, clock).run_once()
    await emitter.run_once()
    await sender.run_once()
    assert len(receiver.requests) == 4
