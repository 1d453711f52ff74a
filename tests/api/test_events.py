"""Server-Sent Events of jobs and restores, read as a portal reads them: over a real HTTP server.

httpx's ASGI transport collects a whole response before returning it, so these tests serve the
app with uvicorn on a loopback port (in the test's event loop, sharing its catalog and clock) and
read the stream with a real client, event by event.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.api import events as sse
from app.auth.principal import Role
from app.context import AppContext
from app.main import create_app
from tests.api.test_isolation import record_restore_point
from tests.api.test_policies import synced_tenant
from tests.api.test_proxies import BEAT, register_proxy
from tests.support.app import create_key
from tests.support.vcsim import VcsimServer

CLAIM = {"capacity": 4, "wait_s": 0}


@dataclass
class Served:
    base_url: str
    app: FastAPI

    def client(self, key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, timeout=10)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def served(ctx: AppContext, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    """The app behind uvicorn on a free loopback port, polling fast so that tests stay short."""
    monkeypatch.setattr(sse, "POLL_S", 0.05)
    monkeypatch.setattr(sse, "KEEPALIVE_S", 0.3)
    app = create_app(ctx=ctx)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", app)
    finally:
        app.state.draining.set()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


@dataclass
class Event:
    name: str
    data: str

    @property
    def json(self) -> dict[str, Any]:
        import json

        return json.loads(self.data)  # type: ignore[no-any-return]


class Stream:
    """Reads an event stream in the background; ``next()`` waits for the next event."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        name, data = "message", []
        try:
            async for line in self.response.aiter_lines():
                if line.startswith(":"):
                    await self.queue.put(Event("comment", line[1:].strip()))
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == "" and data:
                    await self.queue.put(Event(name, "\n".join(data)))
                    name, data = "message", []
        finally:
            await self.queue.put(None)  # closed

    async def next(self, skip_comments: bool = True) -> Event | None:
        while True:
            event = await asyncio.wait_for(self.queue.get(), timeout=10)
            if event is None or not (skip_comments and event.name == "comment"):
                return event


@contextlib.asynccontextmanager
async def open_stream(client: httpx.AsyncClient, path: str) -> AsyncIterator[Stream]:
    async with client.stream("GET", path) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        stream = Stream(response)
        try:
            yield stream
        finally:
            stream.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await stream.task


async def running_backup(
    ctx: AppContext, served: Served, vcsim: VcsimServer
) -> tuple[httpx.AsyncClient, httpx.AsyncClient, httpx.AsyncClient, list[dict[str, Any]], dict[str, Any]]:
    """(operator, agent, customer) clients of a tenant whose first VM's backup is running."""
    operator = served.client(await create_key(ctx, Role.OPERATOR))

    async def customer_over_http(name: str) -> tuple[httpx.AsyncClient, uuid.UUID]:
        response = await operator.post("/api/v1/tenants", json={"name": name})
        tenant_id = uuid.UUID(response.json()["id"])
        return served.client(await create_key(ctx, Role.CUSTOMER, tenant_id)), tenant_id

    customer, _, vms = await synced_tenant(operator, customer_over_http, vcsim)
    proxy = await register_proxy(operator, "p", [vms[0]["host"]["id"]])
    agent = served.client(proxy["token"])
    await agent.post("/api/v1/agent/heartbeat", json=BEAT)
    job = (await operator.post("/api/v1/jobs", json={"vm_ids": [vms[0]["id"]]})).json()[0]
    claimed = (await agent.post("/api/v1/agent/jobs/claim", json=CLAIM)).json()["jobs"]
    assert [j["job_id"] for j in claimed] == [job["id"]]
    return operator, agent, customer, vms, job


@pytest.mark.vcsim
async def test_a_jobs_events_follow_it_until_it_ends(
    ctx: AppContext, served: Served, vcsim: VcsimServer
) -> None:
    operator, agent, customer, _, job = await running_backup(ctx, served, vcsim)
    path = f"/api/v1/jobs/{job['id']}/events"
    async with open_stream(customer, path) as stream:
        first = await stream.next()
        assert first is not None and first.name == "state" and first.json["state"] == "running"
        keep_alive = await stream.next(skip_comments=False)  # nothing happens for a while
        assert keep_alive is not None and (keep_alive.name, keep_alive.data) == ("comment", "keep-alive")
        report = {"phase": "reading", "bytes_total": 1000, "bytes_read": 500}
        assert (await agent.post(f"/api/v1/agent/jobs/{job['id']}/progress", json=report)).status_code == 200
        progress = await stream.next()
        assert progress is not None and progress.name == "progress"
        assert (
            progress.json["progress"]["percent"] == 50.0 and progress.json["progress"]["phase"] == "reading"
        )
        done = await agent.post(
            f"/api/v1/agent/jobs/{job['id']}/complete",
            json={"outcome": "failed", "error": "disk read failed", "error_kind": "permanent"},
        )
        assert done.status_code == 204
        ended = [await stream.next(), await stream.next()]
        assert [(e.name, e.json["state"]) for e in ended if e] == [("state", "failed"), ("end", "failed")]
        assert await stream.next() is None  # the server closed the stream

    # An ended job: its state and 'end' at once.
    async with open_stream(operator, path) as stream:
        names = [(await stream.next()), (await stream.next()), (await stream.next())]
        assert [e.name if e else None for e in names] == ["state", "end", None]


@pytest.mark.vcsim
async def test_a_restores_events_follow_it_until_it_ends(
    ctx: AppContext, served: Served, vcsim: VcsimServer
) -> None:
    _, agent, customer, vms, job = await running_backup(ctx, served, vcsim)
    point_id = await record_restore_point(ctx, uuid.UUID(job["id"]))
    vm = vms[0]
    restore = await customer.post(
        "/api/v1/restores",
        json={
            "restore_point_id": str(point_id),
            "target": "new",
            "new_vm": {
                "name": "copy",
                "host_id": vm["host"]["id"],
                "datastore_id": vm["datastores"][0]["id"],
            },
        },
    )
    assert restore.status_code == 202, restore.text
    async with open_stream(customer, f"/api/v1/restores/{restore.json()['id']}/events") as stream:
        first = await stream.next()
        assert first is not None and (first.name, first.json["state"]) == ("state", "requested")
        claimed = (await agent.post("/api/v1/agent/jobs/claim", json=CLAIM)).json()["jobs"]
        (restore_job,) = [j for j in claimed if j["kind"] == "restore"]
        running = await stream.next()
        assert running is not None and (running.name, running.json["state"]) == ("state", "running")
        report = {"phase": "writing", "bytes_total": 400, "bytes_read": 100}
        await agent.post(f"/api/v1/agent/jobs/{restore_job['job_id']}/progress", json=report)
        progress = await stream.next()
        assert progress is not None and progress.name == "progress"
        assert progress.json["progress"]["percent"] == 25.0
        await agent.post(
            f"/api/v1/agent/jobs/{restore_job['job_id']}/complete",
            json={"outcome": "failed", "error": "datastore full", "error_kind": "permanent"},
        )
        rest = [await stream.next(), await stream.next(), await stream.next()]
        assert [(e.name, e.json["state"]) if e else None for e in rest] == [
            ("state", "failed"),
            ("end", "failed"),
            None,
        ]


@pytest.mark.vcsim
async def test_streams_are_isolated_and_stop_for_gone_clients_and_draining_servers(
    ctx: AppContext,
    served: Served,
    vcsim: VcsimServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    operator, _, _, _, job = await running_backup(ctx, served, vcsim)
    path = f"/api/v1/jobs/{job['id']}/events"
    response = await operator.post("/api/v1/tenants", json={"name": "Intruder"})
    intruder = served.client(await create_key(ctx, Role.CUSTOMER, uuid.UUID(response.json()["id"])))
    refused = await intruder.get(path)
    assert refused.status_code == 404 and refused.headers["content-type"] == "application/problem+json"
    assert (await served.client(None).get(path)).status_code == 401
    assert (await operator.get(f"/api/v1/restores/{uuid.uuid4()}/events")).status_code == 404

    polls = 0
    real_poll = sse._poll_job

    async def counted(*args: Any) -> Any:
        nonlocal polls
        polls += 1
        return await real_poll(*args)

    monkeypatch.setattr(sse, "_poll_job", counted)
    async with open_stream(operator, path) as stream:
        assert (await stream.next()) is not None
        await asyncio.sleep(0.2)
    assert polls > 0
    # The server notices the client left and stops polling for it: a quiet 0.3 s comes within
    # seconds (a slow machine only takes more turns; a stream that polls on never gets one).
    for _ in range(30):
        after = polls
        await asyncio.sleep(0.3)
        if polls == after:
            break
    assert polls == after

    async with open_stream(operator, path) as stream:
        assert (await stream.next()) is not None
        served.app.state.draining.set()
        assert await stream.next() is None  # closed without 'end': the client reconnects elsewhere
