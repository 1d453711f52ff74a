"""The composition root of the server: settings → engine → context → routers and loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import APIRouter, FastAPI

from app import __version__
from app.api import (
    agent,
    api_keys,
    health,
    inventory,
    jobs,
    policies,
    proxies,
    restore_points,
    restores,
    tenants,
    vcenters,
)
from app.api.problems import install_problem_handlers
from app.clock import Clock, SystemClock
from app.context import AppContext
from app.crypto import SecretBox, load_or_create_server_key
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade_to_head_async
from app.scheduler.inventory_refresh import InventoryRefreshLoop
from app.scheduler.loop import LoopService
from app.settings import Settings
from app.vcenters.gateway import VCenterGateway

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"


def build_context(
    settings: Settings, clock: Clock | None = None, gateway: VCenterGateway | None = None
) -> AppContext:
    if gateway is None:
        from app.vadp.gateway import PyVmomiGateway

        gateway = PyVmomiGateway()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(settings.effective_database_url)
    return AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        clock=clock or SystemClock(),
        box=SecretBox(load_or_create_server_key(settings)),
        gateway=gateway,
    )


def build_loops(ctx: AppContext) -> list[LoopService]:
    return [
        InventoryRefreshLoop(
            ctx.sessionmaker,
            ctx.syncer,
            ctx.clock,
            sync_every_s=ctx.settings.inventory_sync_interval_s,
            interval_s=ctx.settings.inventory_loop_interval_s,
        )
    ]


def create_app(settings: Settings | None = None, ctx: AppContext | None = None) -> FastAPI:
    settings = settings or (ctx.settings if ctx else Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_ctx = ctx is None
        context = ctx or build_context(settings)
        if own_ctx and settings.should_auto_migrate:
            await upgrade_to_head_async(settings.effective_database_url)
        app.state.ctx = context
        loops = build_loops(context) if settings.run_loops else []
        tasks = [asyncio.create_task(loop.run_forever(), name=loop.name) for loop in loops]
        try:
            yield
        finally:
            for loop in loops:
                loop.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if own_ctx:
                await context.engine.dispose()

    app = FastAPI(
        title="VM Recovery",
        version=__version__,
        description=(
            "Backup and recovery for VMware vSphere. Authenticate with "
            "`Authorization: Bearer <api key>`; errors are RFC 9457 problem+json."
        ),
        lifespan=lifespan,
    )
    if ctx is not None:
        app.state.ctx = ctx
    install_problem_handlers(app)
    api = APIRouter(prefix=API_PREFIX)
    for module in (
        tenants,
        api_keys,
        vcenters,
        inventory,
        policies,
        proxies,
        jobs,
        restore_points,
        restores,
        agent,
    ):
        api.include_router(module.router)
    app.include_router(api)
    app.include_router(health.router)
    return app
