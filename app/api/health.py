"""Liveness and readiness probes (no authentication: load balancers call them)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app import __version__
from app.api.deps import Ctx
from app.db.migrate import current_revision, head_revision

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="The catalog is reachable and its schema is current")
async def readyz(ctx: Ctx) -> JSONResponse:
    checks: dict[str, str] = {}
    ready = True
    try:
        async with asyncio.timeout(5):
            async with ctx.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            current = await current_revision(ctx.engine)
        checks["catalog"] = "ok"
        head = head_revision(ctx.settings.effective_database_url)
        if current == head:
            checks["migrations"] = "ok"
        else:
            ready = False
            checks["migrations"] = (
                f"schema at {current or 'nothing'}, code needs {head}; run 'vmrecovery migrate'"
            )
    except Exception as exc:
        ready = False
        checks["catalog"] = f"unreachable: {type(exc).__name__}: {exc}"
    status = "ready" if ready else "not ready"
    return JSONResponse({"status": status, "checks": checks}, status_code=200 if ready else 503)
