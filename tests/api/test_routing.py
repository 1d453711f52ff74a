"""Routers that turn paths away by their prefix still serve every path under it, and only those."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from app.api.routing import PrefixRouter


def app_with(router: PrefixRouter, mount: str) -> FastAPI:
    app = FastAPI()
    app.include_router(router, prefix=mount)
    return app


async def test_a_prefix_router_serves_its_paths_and_turns_away_the_rest() -> None:
    jobs = PrefixRouter(prefix="/jobs", mount="/api/v1")

    @jobs.get("")
    async def listing() -> str:
        return "list"

    @jobs.get("/{job_id}")
    async def one(job_id: str) -> str:
        return job_id

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app_with(jobs, "/api/v1")), base_url="http://t"
    ) as client:
        assert (await client.get("/api/v1/jobs")).json() == "list"
        assert (await client.get("/api/v1/jobs/j1")).json() == "j1"
        assert (await client.get("/api/v1/jobss")).status_code == 404
        assert (await client.get("/api/v2/jobs")).status_code == 404


async def test_other_paths_never_reach_its_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the router: a request elsewhere costs one string comparison, not a regular
    expression per route."""
    asked: list[str] = []
    original = APIRoute.matches

    def counting(self: APIRoute, scope: Scope) -> tuple[Match, Scope]:
        asked.append(self.path)
        return original(self, scope)

    monkeypatch.setattr(APIRoute, "matches", counting)
    jobs = PrefixRouter(prefix="/jobs")

    @jobs.get("/{job_id}")
    async def one(job_id: str) -> str:
        return job_id

    others = PrefixRouter(prefix="/tenants")

    @others.get("")
    async def tenants() -> list[str]:
        return []

    app = FastAPI()
    app.include_router(jobs, prefix="/api/v1")
    app.include_router(others, prefix="/api/v1")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/api/v1/tenants")).json() == []
        assert "/jobs/{job_id}" not in asked and "/tenants" in asked
        asked.clear()
        assert (await client.get("/api/v1/jobs/j1")).json() == "j1"
        assert "/tenants" not in asked


def test_a_prefix_router_needs_a_prefix_and_keeps_its_routes_under_it() -> None:
    with pytest.raises(ValueError, match="needs a prefix"):
        PrefixRouter()
    jobs = PrefixRouter(prefix="/jobs")
    with pytest.raises(ValueError, match="not be under"):

        @jobs.get("-archive")  # '/jobs-archive': the prefix's letters, not its segment
        async def archive() -> str:
            return "archive"
