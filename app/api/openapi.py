"""OpenAPI descriptions of the problem+json error responses."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None


def _resp(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description, "content": {"application/problem+json": {}}}


AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _resp("Missing or invalid key"),
    403: _resp("The key's role may not do this"),
    422: _resp("Invalid input; `errors` lists each field path"),
}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _resp("No such object in the caller's tenant")}
CONFLICT: dict[int | str, dict[str, Any]] = {409: _resp("Conflicts with the current state")}
UPSTREAM: dict[int | str, dict[str, Any]] = {502: _resp("vCenter failed; the detail says how")}
