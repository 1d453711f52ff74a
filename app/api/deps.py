"""Request dependencies: the session (commit at the edge), the caller, pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.auth.service import ApiKeyService
from app.context import AppContext
from app.pagination import MAX_OFFSET, MAX_PAGE_SIZE, PageRequest
from app.proxies.models import Proxy
from app.proxies.service import ProxyService

_bearer = HTTPBearer(auto_error=False, description="An API key: 'Authorization: Bearer vmr_...'")
_agent_bearer = HTTPBearer(
    auto_error=False, scheme_name="ProxyToken", description="A proxy token: 'Authorization: Bearer vmrp_...'"
)


async def get_ctx(request: Request) -> AppContext:
    # async: a plain def dependency costs a hop through the thread pool on every request.
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


async def _session(ctx: Ctx) -> AsyncIterator[AsyncSession]:
    """One transaction per request, committed before the response is sent.

    Services only flush; a request that raises is rolled back whole, so a bad request
    changes nothing.
    """
    async with ctx.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        else:
            await session.commit()


Session = Annotated[AsyncSession, Depends(_session, scope="function")]


async def _principal(
    request: Request,
    session: Session,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # The request's own transaction (FastAPI hands the endpoint the same session): one checkout
    # per request, not two. Recording key use writes at most once a minute per key.
    bearer = credentials.credentials if credentials else None
    principal = await ApiKeyService(session, ctx.clock).authenticate(bearer)
    request.state.principal = principal  # for the audit log (app.audit.middleware)
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]


async def _identify_agent(
    request: Request, session: AsyncSession, ctx: AppContext, credentials: HTTPAuthorizationCredentials | None
) -> Proxy:
    proxy = await ProxyService(session, ctx.clock, ctx.liveness).authenticate_agent(
        credentials.credentials if credentials else None
    )
    request.state.agent = proxy  # for the audit log (app.audit.middleware)
    return proxy


async def _agent(
    request: Request,
    session: Session,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_agent_bearer)],
) -> Proxy:
    """The calling proxy, read in the request's own transaction (one pool checkout per request:
    completions, progress reports and heartbeats are most of a dispatch's requests)."""
    return await _identify_agent(request, session, ctx, credentials)


async def _polling_agent(
    request: Request,
    ctx: Ctx,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_agent_bearer)],
) -> Proxy:
    """The calling proxy, read in its own short transaction, for the claim's long-poll: the
    request must not hold a transaction open while it waits. The object is detached: read it,
    and re-load it in another session to change it."""
    async with ctx.sessionmaker.begin() as session:
        return await _identify_agent(request, session, ctx, credentials)


CurrentProxy = Annotated[Proxy, Depends(_agent)]
PollingProxy = Annotated[Proxy, Depends(_polling_agent)]


async def _page(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items per page.")] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
    exact_total: Annotated[
        bool,
        Query(
            description="Count every match for total. By default the count stops at the service's "
            "list count limit (10,000 unless configured) and total_exact says whether it did."
        ),
    ] = False,
) -> PageRequest:
    count_limit = None if exact_total else ctx.settings.list_count_limit
    return PageRequest(limit=limit, offset=offset, count_limit=count_limit)


Pagination = Annotated[PageRequest, Depends(_page)]
