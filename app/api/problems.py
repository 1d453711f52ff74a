"""RFC 9457 problem+json for every error the API returns."""

from __future__ import annotations

import logging
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import DomainError, InvalidInput

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "urn:vmrecovery:problem:"


def problem(
    request: Request, status: int, slug: str, title: str, detail: str, **extensions: Any
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extensions,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    extensions = dict(exc.extensions)
    if isinstance(exc, InvalidInput) and exc.field:
        extensions["errors"] = [{"field": _field_path(exc.field), "message": exc.message}]
    return problem(request, exc.status, exc.type_slug, exc.title, exc.message, **extensions)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        message = str(err.get("msg", "invalid value"))
        if err.get("type") == "extra_forbidden":
            message = "unknown field; check the spelling against the API documentation"
        errors.append({"field": _field_path(err.get("loc", ())), "message": message, "type": err.get("type")})
    first = errors[0] if errors else {"field": "", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return problem(
        request,
        422,
        "validation-error",
        "Invalid request",
        f"{first['field']}: {first['message']}{more}",
        errors=errors,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    if status == 404 and detail == "Not Found":
        detail = f"No API endpoint at {request.url.path}; see /docs for the endpoints."
    if status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}; see /docs."
    return problem(request, status, phrase.lower().replace(" ", "-"), phrase, detail)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # Reached when two requests race past the service's own checks (e.g. the same name).
    log.info("integrity conflict on %s %s: %s", request.method, request.url.path, exc)
    return problem(
        request,
        409,
        "conflict",
        "Conflict",
        "The change conflicts with an existing object (a unique name or a reference); reload and retry.",
    )


#: SQLSTATEs of text PostgreSQL cannot store: a NUL character (22021), or one without a
#: counterpart in the database's encoding (22P05). Both come from what the caller sent.
_UNSTORABLE_TEXT = {"22021", "22P05"}


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if getattr(exc.orig, "sqlstate", None) in _UNSTORABLE_TEXT:
        # The request's transaction was rolled back: nothing changed.
        return problem(
            request,
            422,
            "validation-error",
            "Invalid request",
            "Text in the request contains a character that cannot be stored (a NUL character, "
            "\\u0000, most likely); remove it and send the request again.",
        )
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    incident = uuid.uuid4().hex[:12]
    log.exception("unhandled error on %s %s (incident %s)", request.method, request.url.path, incident)
    return problem(
        request,
        500,
        "internal-error",
        "Internal error",
        f"The server failed to handle this request; report incident {incident} to the operator.",
        incident=incident,
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
