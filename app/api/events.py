"""Live progress of a job or a restore as Server-Sent Events, for portals.

``GET /jobs/{id}/events`` and ``GET /restores/{id}/events`` answer ``text/event-stream``: a
``state`` event with the object as ``GET`` returns it, then one whenever it changes (``state``
when its state did, ``progress`` otherwise), a keep-alive comment when nothing happened for a
while, and ``end`` (with the final object) once the work has ended; then the stream closes.
A stream that closes without ``end`` (the server is going down, or the object is gone) is meant
to be reopened: browsers' ``EventSource`` reconnects by itself and gets the current state first.

The endpoints are plain functions returning a streaming response, not FastAPI's generator
endpoints: the tenant check must answer 404 before the stream starts, and the request's
database session (and, on SQLite, its write lock) must end with the function, not with the
stream. Each poll reads the catalog in a short session of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from fastapi.sse import format_sse_event
from pydantic import BaseModel

from app.api.deps import Ctx, CurrentPrincipal, Session
from app.api.openapi import AUTH_ERRORS, NOT_FOUND
from app.auth.principal import Principal
from app.context import AppContext
from app.domain.jobs import TERMINAL, RestoreState
from app.errors import NotFound
from app.jobs.progress import job_read
from app.jobs.schemas import JobRead
from app.jobs.service import JobService
from app.restores.schemas import RestoreRead
from app.restores.service import RestoreService

router = APIRouter(tags=["events"], responses=AUTH_ERRORS)

#: How often the catalog is read for changes, and how long a quiet stream waits before a
#: keep-alive comment (proxies and load balancers close idle connections).
POLL_S = 1.0
KEEPALIVE_S = 15.0

_RESTORE_ENDED = frozenset(
    s.value for s in (RestoreState.SUCCEEDED, RestoreState.FAILED, RestoreState.CANCELLED)
)
_JOB_ENDED = frozenset(s.value for s in TERMINAL)

_STREAM: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/event-stream": {}},
        "description": "Events 'state', 'progress' and finally 'end', each with the object as JSON data; "
        "comment lines keep the connection alive.",
    },
    **NOT_FOUND,
}


def _stream(
    request: Request,
    first: BaseModel,
    poll: Callable[[], Awaitable[BaseModel | None]],
    ended: Callable[[BaseModel], bool],
) -> StreamingResponse:
    draining: asyncio.Event = request.app.state.draining

    async def events() -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        last = first.model_dump_json()
        last_state = getattr(first, "state", None)
        yield format_sse_event(event="state", data_str=last)
        if ended(first):
            yield format_sse_event(event="end", data_str=last)
            return
        quiet_since = loop.time()
        while not draining.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(draining.wait(), timeout=POLL_S)
            if draining.is_set():
                return  # no 'end': the client reconnects, to another replica
            current = await poll()
            if current is None:
                return  # gone (deleted with its tenant): nothing more will happen
            dumped = current.model_dump_json()
            if dumped != last:
                state = getattr(current, "state", None)
                yield format_sse_event(event="state" if state != last_state else "progress", data_str=dumped)
                last, last_state, quiet_since = dumped, state, loop.time()
            if ended(current):
                yield format_sse_event(event="end", data_str=dumped)
                return
            if loop.time() - quiet_since >= KEEPALIVE_S:
                yield format_sse_event(comment="keep-alive")
                quiet_since = loop.time()

    # The client's disconnect ends the stream: Starlette cancels it when the server says so.
    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _poll_job(ctx: AppContext, principal: Principal, job_id: uuid.UUID) -> JobRead | None:
    async with ctx.sessionmaker() as session:
        try:
            job = await JobService(session, ctx.clock).get(principal, job_id)
        except NotFound:
            return None
        return job_read(job, ctx.clock.now())


async def _poll_restore(ctx: AppContext, principal: Principal, restore_id: uuid.UUID) -> RestoreRead | None:
    async with ctx.sessionmaker() as session:
        service = RestoreService(session, ctx.clock)
        try:
            restore = await service.get(principal, restore_id)
        except NotFound:
            return None
        return (await service.to_read([restore]))[0]


def _job_ended(read: BaseModel) -> bool:
    return isinstance(read, JobRead) and read.state in _JOB_ENDED


def _restore_ended(read: BaseModel) -> bool:
    return isinstance(read, RestoreRead) and read.state in _RESTORE_ENDED


@router.get(
    "/jobs/{job_id}/events",
    response_class=StreamingResponse,
    responses=_STREAM,
    summary="A job's state and progress as Server-Sent Events, until it ends",
)
async def job_events(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, job_id: uuid.UUID, request: Request
) -> StreamingResponse:
    first = job_read(await JobService(session, ctx.clock).get(principal, job_id), ctx.clock.now())

    async def poll() -> JobRead | None:
        return await _poll_job(ctx, principal, job_id)

    return _stream(request, first, poll, _job_ended)


@router.get(
    "/restores/{restore_id}/events",
    response_class=StreamingResponse,
    responses=_STREAM,
    summary="A restore's state and progress as Server-Sent Events, until it ends",
)
async def restore_events(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, restore_id: uuid.UUID, request: Request
) -> StreamingResponse:
    service = RestoreService(session, ctx.clock)
    first = (await service.to_read([await service.get(principal, restore_id)]))[0]

    async def poll() -> RestoreRead | None:
        return await _poll_restore(ctx, principal, restore_id)

    return _stream(request, first, poll, _restore_ended)
