"""Helpers for integration tests: a real HTTP receiver, signed tickets, a tenant with restore points."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from sqlalchemy import func, select
from standardwebhooks import Webhook

from app.context import AppContext
from app.integrations.deliverer import DeliveryLoop
from app.integrations.emitter import EventEmitterLoop
from app.integrations.models import Delivery, WebhookReceipt
from app.integrations.signing import sign
from app.restores.models import Restore
from tests.api.test_policies import synced_tenant
from tests.compliance.helpers import add_point
from tests.support.app import CustomerFactory
from tests.support.vcsim import VcsimServer

TICKETS = "/api/v1/webhooks/tickets"


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]

    @property
    def type(self) -> str:
        return str(self.json["type"])

    @property
    def message_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """A real HTTP server on a free loopback port, in a thread: records every request, answers
    the next queued statuses (then ``default_status``), optionally slowly, and counts how many
    requests of one subject (a restore's or an alert's id) were in flight at once."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.statuses: deque[int] = deque()
        self.default_status = 204
        self.delay_s = 0.0
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                data = json.loads(body or b"{}").get("data", {})
                subject = str(data.get("restore_id") or data.get("alert_id") or "")
                with receiver.lock:
                    receiver.requests.append(
                        Received({k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
                    )
                    status = receiver.statuses.popleft() if receiver.statuses else receiver.default_status
                    receiver.in_flight[subject] += 1
                    receiver.max_in_flight[subject] = max(
                        receiver.max_in_flight[subject], receiver.in_flight[subject]
                    )
                try:
                    if receiver.delay_s:
                        time.sleep(receiver.delay_s)
                    payload = b"receiver says no" if status >= 300 else b""
                    self.send_response(status)
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with receiver.lock:
                        receiver.in_flight[subject] -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    def fail_next(self, count: int, status: int = 500) -> None:
        self.statuses.extend([status] * count)

    def types(self) -> list[str]:
        return [r.type for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def check_signature(secret: str, received: Received) -> None:
    """The message is signed with the secret: with the reference library when its timestamp is near
    the wall clock (its ``verify`` reads the wall clock), else by signing it again."""
    stamp = datetime.fromtimestamp(int(received.headers["webhook-timestamp"]), UTC)
    if abs(stamp - datetime.now(UTC)) < timedelta(minutes=4):
        Webhook(secret).verify(received.body, received.headers)
    else:
        expected = Webhook(secret).sign(received.message_id, stamp, received.body.decode())
        assert expected in received.headers["webhook-signature"].split(" ")


async def create_integration(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/integrations", json={"name": "ServiceNow", **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def signed(secret: str, body: bytes, at: datetime, message_id: str | None = None) -> dict[str, str]:
    return {
        **sign(secret, message_id or f"msg_{uuid.uuid4().hex}", at, body),
        "content-type": "application/json",
    }


async def send_ticket(
    client: httpx.AsyncClient,
    integration: dict[str, Any],
    ticket: dict[str, Any],
    at: datetime,
    *,
    message_id: str | None = None,
    secret: str | None = None,
) -> httpx.Response:
    body = json.dumps(ticket).encode()
    headers = signed(secret or integration["secret"], body, at, message_id)
    return await client.post(
        TICKETS, params={"integration": integration["id"]}, content=body, headers=headers
    )


@dataclass
class TicketTenant:
    customer: httpx.AsyncClient
    tenant_id: uuid.UUID
    vms: list[dict[str, Any]]
    #: Image restore points of vms[0]: taken 3 days, 2 days and 1 day ago.
    points: list[tuple[uuid.UUID, datetime]]


async def ticket_tenant(
    ctx: AppContext,
    operator: httpx.AsyncClient,
    customer_of: CustomerFactory,
    vcsim: VcsimServer,
    name: str = "Acme",
) -> TicketTenant:
    customer, tenant_id, vms = await synced_tenant(operator, customer_of, vcsim, name)
    now = ctx.clock.now()
    points = []
    for days in (3, 2, 1):
        at = now - timedelta(days=days)
        points.append((await add_point(ctx, vms[0]["id"], at), at))
    return TicketTenant(customer, tenant_id, vms, points)


def new_vm_ticket(vm: dict[str, Any], ticket_id: str, created_at: datetime, **fields: Any) -> dict[str, Any]:
    """A ticket restoring ``vm`` as a new VM next to it (no approval needed)."""
    return {
        "ticket_id": ticket_id,
        "created_at": created_at.isoformat(),
        "vm_id": vm["id"],
        "type": "vm",
        "target": "new",
        "new_vm": {
            "name": f"{vm['name']}-restored",
            "host_id": vm["host"]["id"],
            "datastore_id": vm["datastores"][0]["id"],
        },
        **fields,
    }


async def counts(ctx: AppContext) -> dict[str, int]:
    async with ctx.sessionmaker() as session:
        return {
            model.__tablename__: (await session.execute(select(func.count()).select_from(model))).scalar_one()
            for model in (Restore, WebhookReceipt, Delivery)
        }


def loops(ctx: AppContext) -> tuple[EventEmitterLoop, DeliveryLoop]:
    return EventEmitterLoop(ctx.sessionmaker, ctx.clock), deliverer(ctx)


def deliverer(ctx: AppContext, **options: Any) -> DeliveryLoop:
    """The deliverer as the service builds it (the receivers' loopback network allowed)."""
    allowed = ctx.settings.webhook_allowed_networks
    return DeliveryLoop(
        ctx.sessionmaker, options.pop("clock", ctx.clock), ctx.box, allowed_networks=allowed, **options
    )
