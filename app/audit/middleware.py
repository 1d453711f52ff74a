"""The audit middleware: one ``audit_events`` row per mutating API request and per 401.

Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``: it passes every response message
through as it comes (server-sent events and file downloads are never buffered) and only looks
at the status, adds ``X-Request-ID`` and, for small JSON answers of the requests it records,
keeps a copy of the body to read the created object's id or the error's reason.

The row is written after the response has been sent, in its own short transaction (the
request's own transaction has committed by then), so that the caller does not wait for it and
a failure to write it never fails the request: it is logged and counted instead. Rows of
requests that end together share one transaction (:mod:`app.audit.writer`); the ASGI call
still returns only once its row is committed.

Agent channel: claims that handed out jobs, completions and quiesce requests are recorded;
heartbeats and progress reports are not (every few seconds per agent and job, they would drown
the log, and their effect is visible on the proxy and the job).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar

from app.audit.schemas import Actor, AuditEntry
from app.auth import tokens
from app.auth.principal import Principal
from app.proxies.models import Proxy

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

API_PREFIX = "/api/v1/"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Agent calls that repeat every few seconds and change nothing but liveness and progress.
QUIET_ROUTES = frozenset({"/api/v1/agent/heartbeat", "/api/v1/agent/jobs/{job_id}/progress"})
CLAIM_ROUTE = "/api/v1/agent/jobs/claim"
#: Larger answers are passed through without reading them (the object id is then not recorded).
BODY_CAPTURE_MAX = 256 * 1024
REQUEST_ID_HEADER = b"x-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_LOOKUP_ID = re.compile(r"[0-9a-f]{16}")
_CREDENTIAL_PREFIXES = frozenset(
    {tokens.API_KEY_PREFIX, tokens.PROXY_TOKEN_PREFIX, tokens.GUEST_TOKEN_PREFIX}
)
_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


class _Response:
    """What the middleware keeps of the response while passing it through."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.capture = False
        self.body = bytearray()
        self.overflow = False

    def add(self, chunk: bytes) -> None:
        if self.overflow:
            return
        if len(self.body) + len(chunk) > BODY_CAPTURE_MAX:
            self.overflow = True
            self.body.clear()
            return
        self.body.extend(chunk)

    def json(self) -> Any:
        if not self.capture or self.overflow or not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class AuditMiddleware:
    #: Events that could not be written in this process (the request itself went through).
    write_failures: ClassVar[int] = 0

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = _request_id(headers.get(REQUEST_ID_HEADER))
        scope.setdefault("state", {})["request_id"] = request_id
        ctx = getattr(scope["app"].state, "ctx", None)
        started_at = ctx.clock.now() if ctx is not None else None
        mutating = scope["method"] in MUTATING and scope["path"].startswith(API_PREFIX)
        response = _Response()

        async def send_and_watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = int(message["status"])
                raw = list(message.get("headers") or [])
                raw.append((REQUEST_ID_HEADER, request_id.encode("ascii")))
                message["headers"] = raw
                response.capture = (mutating or response.status == 401) and _is_json(raw)
            elif message["type"] == "http.response.body" and response.capture:
                response.add(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_watch)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unhandled: the server's error middleware, outside this one, answers 500.
            response.status = response.status or 500
            await self._record(scope, headers, request_id, started_at, mutating, response)
            raise
        await self._record(scope, headers, request_id, started_at, mutating, response)

    async def _record(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        request_id: str,
        started_at: Any,
        mutating: bool,
        response: _Response,
    ) -> None:
        status = response.status
        ctx = getattr(scope["app"].state, "ctx", None)
        if status is None or ctx is None or not (mutating or status == 401):
            return
        try:
            entry = _entry(scope, headers, request_id, started_at or ctx.clock.now(), status, response)
            if entry is None:
                return
            await ctx.audit_writer.write(entry)
        except Exception as exc:
            AuditMiddleware.write_failures += 1
            log.error(
                "audit: could not record %s %s (status %s, request %s): %s: %s",
                scope["method"],
                scope["path"],
                status,
                request_id,
                type(exc).__name__,
                exc,
            )


def _request_id(incoming: bytes | None) -> str:
    """The caller's request id when it is a plain token (so that it can be matched in their
    logs), a new one otherwise: anything else could inject text into ours."""
    if incoming:
        value = incoming.decode("latin-1")
        if _REQUEST_ID.fullmatch(value):
            return value
    return uuid.uuid4().hex


def _is_json(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in raw_headers:
        if name.lower() == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def route_template(scope: Scope) -> str | None:
    """The matched route with its parameters as names ('/api/v1/restores/{restore_id}'), or None
    when no route matched. Included routers keep their prefixes out of ``route.path``; they are
    taken back from the request's path, segment for segment."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    own = [s for s in path.split("/") if s]
    actual = [s for s in str(scope["path"]).split("/") if s]
    if len(actual) < len(own):
        return path
    prefix = actual[: len(actual) - len(own)]
    return "/" + "/".join([*prefix, *own])


def _singular(segment: str) -> str:
    if segment.endswith("ies"):
        return segment[:-3] + "y"
    return segment[:-1] if segment.endswith("s") else segment


def _object_of(template: str, path_params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(type, id) of the object a route acts on: its last path parameter, named after the
    collection before it ('/restores/{restore_id}/approve' → restore); for routes without one,
    the last collection in the path ('/api/v1/restores' → restore), id from the response."""
    segments = [s for s in template.split("/") if s]
    for index in range(len(segments) - 1, -1, -1):
        match = _PARAM.fullmatch(segments[index])
        if match is None:
            continue
        name = match.group(1)
        before = segments[index - 1] if index > 0 else ""
        kind = _singular(before) if before and not _PARAM.fullmatch(before) else name.removesuffix("_id")
        value = path_params.get(name)
        return kind, str(value) if value is not None else None
    for segment in reversed(segments):
        if segment.endswith("s"):
            return _singular(segment), None
    return None, None


def _ids_in(body: Any) -> list[str]:
    """Ids of what a create or a claim returned: an object, a list of objects, or a claim's
    assignments. Nothing else of the body is kept (it may hold a new key's secret)."""
    if isinstance(body, dict):
        if "id" in body:
            return [str(body["id"])]
        jobs = body.get("jobs")
        if isinstance(jobs, list):
            return [str(j["job_id"]) for j in jobs if isinstance(j, dict) and "job_id" in j]
    if isinstance(body, list):
        return [str(item["id"]) for item in body if isinstance(item, dict) and "id" in item]
    return []


def _credential(headers: dict[bytes, bytes]) -> tuple[str | None, str | None]:
    """(prefix, lookup id) of the bearer credential sent, if it has our shape. Never the
    secret part; a lookup part that does not look like ours is not kept either (it could be
    someone's password sent to the wrong place)."""
    value = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, credential = value.partition(" ")
    if scheme.lower() != "bearer":
        return None, None
    parsed = tokens.parse(credential.strip())
    if (
        parsed is None
        or parsed.prefix not in _CREDENTIAL_PREFIXES
        or not _LOOKUP_ID.fullmatch(parsed.lookup_id)
    ):
        return None, None
    return parsed.prefix, parsed.lookup_id


def _entry(
    scope: Scope,
    headers: dict[bytes, bytes],
    request_id: str,
    at: Any,
    status: int,
    response: _Response,
) -> AuditEntry | None:
    template = route_template(scope)
    if template is None and status != 401:
        return None  # no such endpoint: nothing was done
    if template in QUIET_ROUTES and status != 401:
        return None
    body = response.json()
    ids = _ids_in(body) if status < 400 else []
    if template == CLAIM_ROUTE and status < 400 and not ids:
        return None  # an empty long-poll
    prefix, lookup_id = _credential(headers)
    client = scope.get("client")
    entry = AuditEntry(
        at=at,
        request_id=request_id,
        actor=Actor.ANONYMOUS,
        action=f"{scope['method']} {template or scope['path']}",
        status=status,
        key_lookup_id=lookup_id,
        credential_prefix=prefix,
        source_address=str(client[0]) if client else None,
    )
    state = scope.get("state") or {}
    principal = state.get("principal")
    agent = state.get("agent")
    if isinstance(principal, Principal) and principal.integration_id is not None:
        # A ticketing system's signed webhook: the integration is the key.
        entry.actor = Actor.INTEGRATION
        entry.key_id, entry.tenant_id = principal.integration_id, principal.tenant_id
    elif isinstance(principal, Principal):
        entry.actor = Actor(principal.role.value)
        entry.key_id, entry.tenant_id = principal.key_id, principal.tenant_id
    elif isinstance(agent, Proxy):
        entry.actor = Actor.AGENT
        entry.key_id, entry.tenant_id = agent.id, agent.tenant_id
    refused = state.get("refused_integration")
    if refused is not None:
        # A signed webhook refused: anonymous, but against that integration (of that tenant).
        entry.object_type, entry.object_id = "integration", str(refused[0])
        entry.tenant_id = refused[1]
    elif template is not None:
        entry.object_type, entry.object_id = _object_of(template, dict(scope.get("path_params") or {}))
    if entry.object_id is None and ids:
        entry.object_id = ids[0]
        if len(ids) > 1:
            entry.detail["object_ids"] = ids[:100]
    if status >= 400 and isinstance(body, dict) and isinstance(body.get("detail"), str):
        entry.detail["reason"] = body["detail"][:500]
    return entry
