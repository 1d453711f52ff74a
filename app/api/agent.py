"""The agent channel: endpoints that only proxy tokens reach."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Annotated

from fastapi import Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.api.deps import Ctx, CurrentProxy, PollingProxy, Session
from app.api.openapi import CONFLICT, _resp
from app.api.routing import PrefixRouter
from app.context import AppContext
from app.contracts.agent import (
    ClaimRequest,
    ClaimResponse,
    CleanupTargets,
    CompleteRequest,
    Heartbeat,
    HeartbeatAck,
    JobAssignment,
    ProgressAck,
    ProgressReport,
    QuiesceStatus,
)
from app.jobs.agent_channel import AgentChannel, Limits
from app.jobs.quiesce import QuiesceCoordinator
from app.proxies.service import ProxyService

router = PrefixRouter(
    prefix="/agent", tags=["agent"], responses={401: _resp("Missing or invalid proxy token")}
)

CLAIM_POLL_S = 0.5


def _channel(ctx: AppContext, session: AsyncSession) -> AgentChannel:
    settings = ctx.settings
    limits = Limits(
        per_host=settings.limit_per_host,
        per_datastore=settings.limit_per_datastore,
        total=settings.limit_global,
    )
    return AgentChannel(
        session,
        ctx.clock,
        ctx.box,
        settings.job_lease_s,
        ctx.repository_access,
        limits,
        freeze_timeout_s=settings.guest_freeze_timeout_s,
        offsite=ctx.offsite_access,
    )


Attempt = Annotated[
    int | None,
    Query(
        ge=1,
        description="The attempt the report is about (the assignment's attempt). A report of an "
        "attempt that a later one superseded is refused with 409; without it, the job's current "
        "attempt is assumed.",
    ),
]


@router.post("/heartbeat", response_model=HeartbeatAck, summary="A proxy says it is alive")
async def heartbeat(
    ctx: Ctx, session: Session, proxy: CurrentProxy, body: Heartbeat, request: Request
) -> HeartbeatAck:
    interval = max(5.0, ctx.settings.proxy_stale_after_s / 3)
    address = request.client.host if request.client else None
    return await ProxyService(session, ctx.clock, ctx.liveness).heartbeat(proxy, body, address, interval)


@router.post("/jobs/claim", response_model=ClaimResponse, summary="Take jobs for the hosts this proxy serves")
async def claim(ctx: Ctx, proxy: PollingProxy, body: ClaimRequest, request: Request) -> ClaimResponse:
    """Long-poll: answers as soon as there is work, or empty after ``wait_s``.

    Each attempt is its own short transaction, so waiting holds no lock.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + body.wait_s
    draining: asyncio.Event = request.app.state.draining
    while True:
        if await request.is_disconnected():
            # A proxy that died mid-poll must not be handed jobs it will never run.
            return ClaimResponse(jobs=[])
        # Two transactions: the first holds the claim lock only while it reserves jobs; the
        # second builds the assignments without it.
        async with ctx.sessionmaker.begin() as session:
            reserved = await _channel(ctx, session).reserve(proxy, body.capacity)
        jobs: list[JobAssignment] = []
        if reserved:
            async with ctx.sessionmaker.begin() as session:
                jobs = await _channel(ctx, session).assign(proxy, reserved)
        if jobs or loop.time() >= deadline or draining.is_set():
            return ClaimResponse(jobs=jobs)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                draining.wait(), timeout=min(CLAIM_POLL_S, max(0.0, deadline - loop.time()))
            )


@router.post(
    "/jobs/{job_id}/progress",
    response_model=ProgressAck,
    responses=CONFLICT,
    summary="Report progress; extends the lease and says whether to cancel",
)
async def progress(
    ctx: Ctx,
    session: Session,
    proxy: CurrentProxy,
    job_id: uuid.UUID,
    body: ProgressReport,
    attempt: Attempt = None,
) -> ProgressAck:
    return await _channel(ctx, session).progress(proxy, job_id, body, attempt)


@router.post(
    "/jobs/{job_id}/complete", status_code=204, responses=CONFLICT, summary="Report the job's outcome"
)
async def complete(
    ctx: Ctx,
    session: Session,
    proxy: CurrentProxy,
    job_id: uuid.UUID,
    body: CompleteRequest,
    attempt: Attempt = None,
) -> None:
    await _channel(ctx, session).complete(proxy, job_id, body, attempt)


@router.post(
    "/jobs/{job_id}/quiesce",
    response_model=QuiesceStatus,
    responses=CONFLICT,
    summary="Ask the VM's guest agent to freeze its applications for this backup's snapshot",
)
async def request_quiesce(
    ctx: Ctx, session: Session, proxy: CurrentProxy, job_id: uuid.UUID, attempt: Attempt = None
) -> QuiesceStatus:
    return await QuiesceCoordinator(session, ctx.clock).request(proxy, job_id, attempt)


@router.get(
    "/jobs/{job_id}/quiesce",
    response_model=QuiesceStatus,
    responses=CONFLICT,
    summary="Whether the guest agent has frozen its applications",
)
async def quiesce_status(
    ctx: Ctx, session: Session, proxy: CurrentProxy, job_id: uuid.UUID, attempt: Attempt = None
) -> QuiesceStatus:
    return await QuiesceCoordinator(session, ctx.clock).status(proxy, job_id, attempt)


@router.post(
    "/jobs/{job_id}/quiesce/release",
    response_model=QuiesceStatus,
    responses=CONFLICT,
    summary="The snapshot is taken: let the guest agent thaw",
)
async def release_quiesce(
    ctx: Ctx, session: Session, proxy: CurrentProxy, job_id: uuid.UUID, attempt: Attempt = None
) -> QuiesceStatus:
    return await QuiesceCoordinator(session, ctx.clock).release(proxy, job_id, attempt)


@router.get(
    "/cleanup-targets",
    response_model=CleanupTargets,
    summary="vCenters where this proxy may have left snapshots (checked at start-up)",
)
async def cleanup_targets(ctx: Ctx, session: Session, proxy: CurrentProxy) -> CleanupTargets:
    return await _channel(ctx, session).cleanup_targets(proxy)
