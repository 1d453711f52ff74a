"""A list's total: counted up to the service's list count limit, exact on request, and always far
enough to tell whether the requested page has a next one."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from app.context import AppContext
from app.settings import Settings
from tests.support.app import CustomerFactory
from tests.support.sql import statements_sent

LIMIT = 5


def is_count(sql: str) -> bool:
    return sql.lstrip().upper().startswith("SELECT COUNT(")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings with a list count limit small enough to pass in a test."""
    return settings.model_copy(update={"list_count_limit": LIMIT})


async def page(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


async def add_policies(client: httpx.AsyncClient, tenant_id: uuid.UUID, names: list[str]) -> None:
    for name in names:
        created = await client.post("/api/v1/policies", json={"tenant_id": str(tenant_id), "name": name})
        assert created.status_code == 201, created.text


async def test_a_long_list_counts_up_to_the_limit_and_says_so(operator: httpx.AsyncClient) -> None:
    for i in range(8):
        assert (await operator.post("/api/v1/tenants", json={"name": f"t{i}"})).status_code == 201

    first = await page(operator, "/api/v1/tenants", limit=2)
    assert (first["total"], first["total_exact"]) == (LIMIT, False)
    assert [t["name"] for t in first["items"]] == ["t0", "t1"]

    # The count reaches one past the requested page, so a pager still sees the next page.
    deep = await page(operator, "/api/v1/tenants", limit=2, offset=4)
    assert (deep["total"], deep["total_exact"]) == (7, False)
    assert deep["total"] > deep["offset"] + deep["limit"]
    assert [t["name"] for t in deep["items"]] == ["t4", "t5"]

    last = await page(operator, "/api/v1/tenants", limit=2, offset=6)
    assert (last["total"], last["total_exact"]) == (8, True)
    assert [t["name"] for t in last["items"]] == ["t6", "t7"]

    exact = await page(operator, "/api/v1/tenants", limit=2, exact_total="true")
    assert (exact["total"], exact["total_exact"]) == (8, True)
    assert exact["items"] == first["items"]


async def test_a_short_or_filtered_list_is_counted_exactly(operator: httpx.AsyncClient) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert (await operator.post("/api/v1/tenants", json={"name": name})).status_code == 201
    short = await page(operator, "/api/v1/tenants")
    assert (short["total"], short["total_exact"]) == (3, True)
    for i in range(6):
        assert (await operator.post("/api/v1/tenants", json={"name": f"t{i}"})).status_code == 201
    filtered = await page(operator, "/api/v1/tenants", q="a")
    assert (filtered["total"], filtered["total_exact"]) == (3, True)


async def test_the_cap_applies_within_the_callers_tenant(
    operator: httpx.AsyncClient, customer_of: CustomerFactory
) -> None:
    acme, acme_id = await customer_of("Acme")
    globex, globex_id = await customer_of("Globex")
    await add_policies(operator, acme_id, [f"acme-{i}" for i in range(7)])
    await add_policies(operator, globex_id, ["globex-0", "globex-1"])

    mine = await page(acme, "/api/v1/policies", limit=2)
    assert (mine["total"], mine["total_exact"]) == (LIMIT, False)
    assert all(p["tenant_id"] == str(acme_id) for p in mine["items"])
    assert (await page(acme, "/api/v1/policies", exact_total="true"))["total"] == 7
    theirs = await page(globex, "/api/v1/policies", exact_total="true")
    assert (theirs["total"], theirs["total_exact"]) == (2, True)
    everyone = await page(operator, "/api/v1/policies", exact_total="true")
    assert everyone["total"] == 9


async def test_a_bad_exact_total_is_a_422_problem(operator: httpx.AsyncClient) -> None:
    response = await operator.get("/api/v1/tenants", params={"exact_total": "sometimes"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "exact_total" in response.text


async def test_a_page_that_is_not_full_tells_its_total_without_a_count(
    ctx: AppContext, operator: httpx.AsyncClient
) -> None:
    for name in ("alpha", "beta", "gamma"):
        assert (await operator.post("/api/v1/tenants", json={"name": name})).status_code == 201
    with statements_sent(ctx.engine, where=is_count) as counts:
        short = await page(operator, "/api/v1/tenants", limit=10)
        tail = await page(operator, "/api/v1/tenants", limit=2, offset=2)
    assert (short["total"], short["total_exact"], len(short["items"])) == (3, True, 3)
    assert (tail["total"], tail["total_exact"], [t["name"] for t in tail["items"]]) == (3, True, ["gamma"])
    assert counts == []

    with statements_sent(ctx.engine, where=is_count) as counts:
        full = await page(operator, "/api/v1/tenants", limit=3)
        past_the_end = await page(operator, "/api/v1/tenants", limit=2, offset=10)
    assert (full["total"], full["total_exact"], len(full["items"])) == (3, True, 3)
    assert (past_the_end["total"], past_the_end["total_exact"], past_the_end["items"]) == (3, True, [])
    assert len(counts) == 2


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/tenants", {"offset": str(10**20)}, "offset"),
        ("/api/v1/restore-points", {"created_after": "2024-01-01T00:00:00"}, "created_after"),
        ("/api/v1/restore-points", {"created_before": "0001-01-01T00:00:00+01:00"}, "created_before"),
        ("/api/v1/audit-events", {"since": "2024-01-01T00:00:00"}, "since"),
        ("/api/v1/compliance/rpo", {"to": "0001-01-01T00:00:00Z"}, "to"),
    ],
)
async def test_out_of_range_or_naive_query_values_are_a_422_problem(
    operator: httpx.AsyncClient, path: str, params: dict[str, str], field: str
) -> None:
    """Numbers past the catalog's 64-bit columns and instants without a timezone or out of range
    were 500s; they are the caller's to fix."""
    response = await operator.get(path, params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == f"query.{field}"
