"""Domain errors that carry their HTTP status.

Services raise these, never ``HTTPException``; one handler in :mod:`app.api.problems` turns
them into RFC 9457 problem+json. Each message is written for the person who has to act on it.
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    status: int = 400
    title: str = "Bad request"
    type_slug: str = "bad-request"

    def __init__(self, message: str, **extensions: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extensions = extensions


class NotFound(DomainError):
    status = 404
    title = "Not found"
    type_slug = "not-found"


class Conflict(DomainError):
    status = 409
    title = "Conflict"
    type_slug = "conflict"


class Unauthorized(DomainError):
    status = 401
    title = "Unauthorized"
    type_slug = "unauthorized"


class Forbidden(DomainError):
    status = 403
    title = "Forbidden"
    type_slug = "forbidden"


class InvalidInput(DomainError):
    """Input that is well-formed but refers to something impossible (422)."""

    status = 422
    title = "Invalid input"
    type_slug = "invalid-input"

    def __init__(self, message: str, field: list[str | int] | None = None, **extensions: Any) -> None:
        super().__init__(message, **extensions)
        self.field = field


class UpstreamError(DomainError):
    """A system we depend on (vCenter) failed; the request itself was fine."""

    status = 502
    title = "Upstream failure"
    type_slug = "upstream-failure"


class Unavailable(DomainError):
    status = 503
    title = "Service unavailable"
    type_slug = "unavailable"
