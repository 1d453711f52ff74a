"""``/metrics`` for Prometheus.

Unauthenticated, like ``/healthz``: it carries counts only (no tenant, VM or object names or
ids), and Prometheus scrapes without API keys. Expose it only on the network your Prometheus
uses (it is not part of the public API and not in the OpenAPI document).
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import Ctx
from app.metrics.collector import read_catalog, render

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(ctx: Ctx) -> Response:
    snap = await read_catalog(
        ctx.sessionmaker,
        ctx.clock,
        timedelta(seconds=ctx.settings.proxy_stale_after_s),
        timedelta(seconds=ctx.settings.proxy_offline_after_s),
    )
    return Response(render(snap), media_type=CONTENT_TYPE_LATEST)
