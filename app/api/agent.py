"""The agent channel: endpoints that only proxy tokens reach."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.api.deps import Ctx, CurrentProxy, Session
from app.api.openapi import _resp
from app.contracts.agent import Heartbeat, HeartbeatAck
from app.proxies.service import ProxyService

router = APIRouter(prefix="/agent", tags=["agent"], responses={401: _resp("Missing or invalid proxy token")})


@router.post("/heartbeat", response_model=HeartbeatAck, summary="A proxy says it is alive")
async def heartbeat(
    ctx: Ctx, session: Session, proxy: CurrentProxy, body: Heartbeat, request: Request
) -> HeartbeatAck:
    interval = max(5.0, ctx.settings.proxy_stale_after_s / 3)
    address = request.client.host if request.client else None
    return await ProxyService(session, ctx.clock, ctx.liveness).heartbeat(proxy, body, address, interval)
