"""pytest plugin: the application in-process, with keys and helpers for each role."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.auth.principal import Role
from app.auth.schemas import ApiKeyCreate
from app.auth.service import ApiKeyService
from app.clock import ManualClock
from app.context import AppContext
from app.crypto import SecretBox
from app.db.engine import create_sessionmaker
from app.main import create_app
from app.settings import Settings
from app.vadp.gateway import PyVmomiGateway

ClientFactory = Callable[[str], httpx.AsyncClient]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_url,
        secret_key="test-secret-key-0123456789",  # type: ignore[arg-type]
        run_loops=False,
        vcenter_timeout_s=10,
        # The tests' webhook receivers listen on loopback, which integrations may not name unless
        # an operator allows it (app.integrations.destinations).
        webhook_allowed_networks=["127.0.0.0/8", "::1/128"],  # type: ignore[list-item]
    )


@pytest.fixture
def ctx(settings: Settings, engine: AsyncEngine, clock: ManualClock) -> AppContext:
    return AppContext(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        clock=clock,
        box=SecretBox("test-secret-key-0123456789"),
        gateway=PyVmomiGateway(),
    )


@pytest.fixture
async def make_client(ctx: AppContext) -> AsyncIterator[ClientFactory]:
    app = create_app(ctx=ctx)
    clients: list[httpx.AsyncClient] = []

    def factory(key: str | None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver", headers=headers
        )
        clients.append(client)
        return client

    yield factory
    for client in clients:
        await client.aclose()


async def create_key(ctx: AppContext, role: Role, tenant_id: uuid.UUID | None = None) -> str:
    async with ctx.sessionmaker.begin() as session:
        _, secret = await ApiKeyService(session, ctx.clock).create(
            None, ApiKeyCreate(name=f"{role.value}-test", role=role, tenant_id=tenant_id)
        )
    return secret


@pytest.fixture
async def operator(ctx: AppContext, make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client(await create_key(ctx, Role.OPERATOR))


@pytest.fixture
def anonymous(make_client: ClientFactory) -> httpx.AsyncClient:
    return make_client(None)


CustomerFactory = Callable[[str], Awaitable[tuple[httpx.AsyncClient, uuid.UUID]]]


@pytest.fixture
def customer_of(ctx: AppContext, make_client: ClientFactory, operator: httpx.AsyncClient) -> CustomerFactory:
    """``await customer_of("acme")``: creates the tenant and returns a customer client for it."""

    async def make(tenant_name: str) -> tuple[httpx.AsyncClient, uuid.UUID]:
        response = await operator.post("/api/v1/tenants", json={"name": tenant_name})
        assert response.status_code == 201, response.text
        tenant_id = uuid.UUID(response.json()["id"])
        return make_client(await create_key(ctx, Role.CUSTOMER, tenant_id)), tenant_id

    return make
