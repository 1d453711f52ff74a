"""The composition root of the server: settings → engine → context → routers and loops."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio.lowlevel
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError

from app import __version__
from app.alerts.loop import AlertLoop
from app.api import (
    agent,
    alerts,
    api_keys,
    audit,
    change_requests,
    compliance,
    events,
    guest_agents,
    health,
    integrations,
    inventory,
    jobs,
    metrics,
    policies,
    proxies,
    restore_points,
    restores,
    tenants,
    vcenters,
    webhooks,
)
from app.api.problems import install_problem_handlers
from app.api.routing import API_PREFIX, PrefixRouter
from app.audit.middleware import AuditMiddleware
from app.clock import Clock, SystemClock
from app.compliance.recorder import RestoreSlaRecorder, RpoRecorder
from app.context import AppContext
from app.crypto import SecretBox, load_or_create_server_key
from app.db.engine import create_engine, create_sessionmaker
from app.db.migrate import upgrade_to_head_async
from app.db.warmup import warm_pool
from app.integrations.deliverer import DeliveryLoop
from app.integrations.emitter import EventEmitterLoop
from app.proxies.service import ensure_embedded_proxy
from app.retention.archives import ArchiveExpiryLoop
from app.retention.loop import GcLoop, RetentionLoop
from app.retention.offsite_loop import OffsiteLoop
from app.retention.repository import OFFSITE_WRITING_KINDS
from app.scheduler.dispatch_watch import DispatchWatchLoop
from app.scheduler.inventory_refresh import InventoryRefreshLoop
from app.scheduler.loop import LoopService
from app.scheduler.planner import PlannerLoop
from app.scheduler.reaper import ReaperLoop
from app.settings import Settings
from app.storage import ensure_offsite_repository, ensure_onsite_repository
from app.vcenters.gateway import VCenterGateway

if TYPE_CHECKING:
    from app.agent.worker import ProxyAgent

log = logging.getLogger(__name__)


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
    settings = ctx.settings
    return [
        InventoryRefreshLoop(
            ctx.sessionmaker,
            ctx.syncer,
            ctx.clock,
            sync_every_s=settings.inventory_sync_interval_s,
            interval_s=settings.inventory_loop_interval_s,
        ),
        PlannerLoop(ctx.sessionmaker, ctx.clock, interval_s=settings.planner_interval_s),
        ReaperLoop(ctx.sessionmaker, ctx.clock, interval_s=settings.reaper_interval_s),
        DispatchWatchLoop(ctx.sessionmaker, ctx.clock, settings.proxy_stale_after_s),
        RpoRecorder(ctx.sessionmaker, ctx.clock, proxy_stale_after_s=settings.proxy_stale_after_s),
        RestoreSlaRecorder(ctx.sessionmaker, ctx.clock),
        AlertLoop(
            ctx.sessionmaker,
            ctx.clock,
            proxy_stale_after_s=settings.proxy_stale_after_s,
            proxy_offline_after_s=settings.proxy_offline_after_s,
        ),
        EventEmitterLoop(ctx.sessionmaker, ctx.clock),
        DeliveryLoop(
            ctx.sessionmaker, ctx.clock, ctx.box, allowed_networks=ctx.settings.webhook_allowed_networks
        ),
        *retention_loops(ctx),
    ]


def retention_loops(ctx: AppContext) -> list[LoopService]:
    settings = ctx.settings
    onsite = ctx.onsite
    return [
        RetentionLoop(ctx.sessionmaker, onsite, ctx.clock, interval_s=settings.retention_interval_s),
        GcLoop(
            ctx.sessionmaker,
            onsite,
            ctx.clock,
            grace=timedelta(hours=settings.gc_grace_hours),
            every=timedelta(hours=settings.gc_interval_hours),
        ),
        *offsite_loops(ctx),
        ArchiveExpiryLoop(
            ctx.sessionmaker, onsite, ctx.clock, keep=timedelta(hours=settings.archive_retention_hours)
        ),
    ]


def offsite_loops(ctx: AppContext) -> list[LoopService]:
    """Offsite retention, copies tried again, and the offsite repository's own GC."""
    settings = ctx.settings
    if settings.offsite_repository is None:
        return []
    gc_loop = GcLoop(
        ctx.sessionmaker,
        ctx.offsite,
        ctx.clock,
        grace=timedelta(hours=settings.gc_grace_hours),
        every=timedelta(hours=settings.gc_interval_hours),
        writers=OFFSITE_WRITING_KINDS,
        name="offsite-gc",
    )
    return [OffsiteLoop(ctx.sessionmaker, ctx.offsite, ctx.clock), gc_loop]


def embedded_proxy_name(settings: Settings) -> str:
    """One embedded proxy per replica: each re-issues its own token at start, and a shared
    one would lock the other replicas' proxies out."""
    return f"embedded@{socket.gethostname()}:{settings.port}"


class EmbeddedProxy:
    """The proxy ``serve`` runs for all hosts. It talks to this very process over loopback
    HTTP, exactly as a remote proxy would, so there is one code path for both. It waits
    for the catalog to be migrated before it registers itself."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.agent: ProxyAgent | None = None
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        from app.agent.main import build_agent

        settings = self.ctx.settings
        while not self._stopping.is_set():
            try:
                async with self.ctx.sessionmaker.begin() as session:
                    _, token = await ensure_embedded_proxy(
                        session, self.ctx.clock, settings.proxy_workers, embedded_proxy_name(settings)
                    )
                break
            except SQLAlchemyError as exc:
                log.warning("embedded proxy waits for the catalog (run 'vmrecovery migrate'?): %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=5)
        else:
            return
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104
        self.agent = build_agent(f"http://{host}:{settings.port}", token, settings.proxy_workers)
        try:
            await self.agent.run()
        finally:
            await self.agent.client.close()

    def stop(self) -> None:
        self._stopping.set()
        if self.agent is not None:
            self.agent.stop()


async def _stop_on_drain(app: FastAPI, embedded: EmbeddedProxy) -> None:
    await app.state.draining.wait()
    embedded.stop()


def _freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the garbage collector's reach (``gc.freeze``).

    The process holds ~200,000 long-lived objects (routes, pydantic and SQLAlchemy schemas,
    modules) that never become garbage, yet every full collection walked them all: 100-145 ms
    with the event loop stopped, which every request in flight then waited for, and ~2.4 ms of
    CPU per VM page under load (docs/benchmarks.md). Frozen, a full collection walks only what
    the requests allocated. Objects created later are collected as before.
    """
    gc.collect()
    gc.freeze()


def _build_route_tables(app: FastAPI, paths: list[str]) -> None:
    """Have every router build its lookup tables now rather than on the first request.

    FastAPI builds an included router's table of effective routes lazily, on the first request
    that reaches it: ~120 ms for ours, paid by whichever request comes first to each process (a
    new replica behind a load balancer answered its first requests 100-300 ms late). A path that
    no route serves walks every router it gets past; a router that turns away paths outside its
    prefix (PrefixRouter) needs one such path under its prefix.
    """
    scope = {"type": "http", "method": "GET", "root_path": "", "headers": [], "query_string": b""}
    for path in paths:
        for route in app.router.routes:
            route.matches({**scope, "path": path, "app": app})


def create_app(settings: Settings | None = None, ctx: AppContext | None = None) -> FastAPI:
    settings = settings or (ctx.settings if ctx else Settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_ctx = ctx is None
        context = ctx or build_context(settings)
        if own_ctx and settings.should_auto_migrate:
            await upgrade_to_head_async(settings.effective_database_url)
        if own_ctx:
            await asyncio.to_thread(ensure_onsite_repository, settings)
            await asyncio.to_thread(ensure_offsite_repository, settings)
        app.state.ctx = context
        loops = build_loops(context) if settings.run_loops else []
        tasks = [asyncio.create_task(loop.run_forever(), name=loop.name) for loop in loops]
        embedded = EmbeddedProxy(context) if own_ctx and settings.embedded_proxy else None
        embedded_task: asyncio.Task[None] | None = None
        if embedded is not None:
            embedded_task = asyncio.create_task(embedded.run(), name="embedded-proxy")
            tasks.append(embedded_task)
            tasks.append(asyncio.create_task(_stop_on_drain(app, embedded), name="drain-watch"))
        if own_ctx:  # a server process (tests that bring their own context share theirs)
            await warm_pool(context.engine)
            # Imports anyio's asyncio backend, which FastAPI's dependencies use: 20-35 ms that
            # the first request would otherwise wait for, with the event loop blocked.
            await anyio.lowlevel.checkpoint()
            _build_route_tables(app, warm_up_paths)
            _freeze_startup_objects()
        try:
            yield
        finally:
            if embedded is not None and embedded_task is not None:
                # Let running jobs remove their snapshots and report before the loop ends.
                embedded.stop()
                await asyncio.wait([embedded_task], timeout=70)
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
    # Set when the server starts shutting down (see app.cli's server): long-polls answer at
    # once so that the server does not wait for them before it can stop.
    app.state.draining = asyncio.Event()
    install_problem_handlers(app)
    # Records mutating requests and 401s, and gives every response an X-Request-ID.
    app.add_middleware(AuditMiddleware)
    api = PrefixRouter(prefix=API_PREFIX, mount="")
    routers = [
        module.router
        for module in (
            tenants,
            api_keys,
            vcenters,
            inventory,
            policies,
            proxies,
            guest_agents,
            jobs,
            restore_points,
            restores,
            change_requests,
            compliance,
            events,
            audit,
            alerts,
            integrations,
            webhooks,
            agent,
        )
    ]
    for router in routers:
        api.include_router(router)
    app.include_router(api)
    # A path under each router that no route serves (the lifespan warms the route tables with them).
    warm_up_paths = ["/\x00", *(f"{r.gate}/\x00" for r in [api, *routers] if isinstance(r, PrefixRouter))]
    app.include_router(health.router)
    app.include_router(metrics.router)
    return app
