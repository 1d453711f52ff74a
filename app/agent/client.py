"""HTTP client of the agent channel.

Transport errors and 5xx answers are transient (the service restarts, a replica dies): the
caller retries. 409 means the job is not ours any more (lease lost, cancelled elsewhere). Other
4xx answers are our bug or our revoked token: fatal for that call.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

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

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class AgentChannelError(Exception):
    pass


class TransientChannelError(AgentChannelError):
    """The service could not be reached or failed; try again later."""


class LeaseLost(AgentChannelError):
    """The service says the job is no longer ours; stop working on it."""


class FatalChannelError(AgentChannelError):
    """The service refused the request (bad token, bad request); retrying will not help."""


class AgentClient:
    def __init__(self, server: str, token: str, timeout_s: float = 30.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=server.rstrip("/") + "/api/v1/agent",
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        body: BaseModel | None,
        model: type[M] | None,
        request_timeout_s: float | None = None,
    ) -> M | None:
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["content"] = body.model_dump_json()
            kwargs["headers"] = {"Content-Type": "application/json"}
        if request_timeout_s is not None:
            kwargs["timeout"] = request_timeout_s
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise TransientChannelError(f"cannot reach the service: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500:
            raise TransientChannelError(f"the service failed ({response.status_code}): {_detail(response)}")
        if response.status_code == 409:
            raise LeaseLost(_detail(response))
        if response.status_code >= 400:
            raise FatalChannelError(
                f"the service refused {method} {path} ({response.status_code}): {_detail(response)}"
            )
        if model is None:
            return None
        return model.model_validate_json(response.content)

    async def heartbeat(self, beat: Heartbeat) -> HeartbeatAck:
        ack = await self._call("POST", "/heartbeat", beat, HeartbeatAck)
        assert ack is not None
        return ack

    async def claim(self, capacity: int, wait_s: float) -> list[JobAssignment]:
        response = await self._call(
            "POST",
            "/jobs/claim",
            ClaimRequest(capacity=capacity, wait_s=wait_s),
            ClaimResponse,
            request_timeout_s=wait_s + 30,
        )
        assert response is not None
        return response.jobs

    async def progress(
        self, job_id: uuid.UUID, report: ProgressReport, attempt: int | None = None
    ) -> ProgressAck:
        ack = await self._call("POST", f"/jobs/{job_id}/progress{_attempt(attempt)}", report, ProgressAck)
        assert ack is not None
        return ack

    async def complete(self, job_id: uuid.UUID, request: CompleteRequest, attempt: int | None = None) -> None:
        await self._call("POST", f"/jobs/{job_id}/complete{_attempt(attempt)}", request, None)

    async def quiesce(self, job_id: uuid.UUID, action: str, attempt: int | None = None) -> QuiesceStatus:
        """``request``, ``status`` or ``release`` the guest freeze of a running backup."""
        method, path = {
            "request": ("POST", f"/jobs/{job_id}/quiesce"),
            "status": ("GET", f"/jobs/{job_id}/quiesce"),
            "release": ("POST", f"/jobs/{job_id}/quiesce/release"),
        }[action]
        status = await self._call(method, f"{path}{_attempt(attempt)}", None, QuiesceStatus)
        assert status is not None
        return status

    async def cleanup_targets(self) -> CleanupTargets:
        targets = await self._call("GET", "/cleanup-targets", None, CleanupTargets)
        assert targets is not None
        return targets


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(body)[:300]


def _attempt(attempt: int | None) -> str:
    """The query that names the attempt a report belongs to: the service refuses (409) a report
    of an attempt that a later one superseded (the job was re-queued and claimed again)."""
    return "" if attempt is None else f"?attempt={attempt}"
