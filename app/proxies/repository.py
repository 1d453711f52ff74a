"""All SQL about proxies and the hosts they serve."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Select, bindparam, delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.paging import fetch_page
from app.domain.jobs import AgentKind
from app.inventory.models import Host
from app.pagination import PageRequest
from app.proxies.models import Proxy, proxy_hosts


@functools.cache
def _by_token_lookup() -> Select[tuple[Proxy]]:
    return select(Proxy).where(Proxy.token_lookup_id == bindparam("lookup_id"))


class ProxyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, proxy_id: uuid.UUID) -> Proxy | None:
        return (await self.session.execute(select(Proxy).where(Proxy.id == proxy_id))).scalar_one_or_none()

    async def get_by_name(self, name: str) -> Proxy | None:
        return (await self.session.execute(select(Proxy).where(Proxy.name == name))).scalar_one_or_none()

    async def get_by_token_lookup(self, lookup_id: str) -> Proxy | None:
        """Every agent request authenticates through here: the statement is built once."""
        stmt = _by_token_lookup()
        return (await self.session.execute(stmt, {"lookup_id": lookup_id})).scalar_one_or_none()

    async def list_page(
        self, page: PageRequest, host_id: uuid.UUID | None, name_contains: str | None
    ) -> tuple[list[Proxy], int]:
        stmt = select(Proxy).where(Proxy.kind == AgentKind.PROXY.value)
        if host_id is not None:
            stmt = stmt.where(
                Proxy.id.in_(select(proxy_hosts.c.proxy_id).where(proxy_hosts.c.host_id == host_id))
            )
        if name_contains:
            stmt = stmt.where(Proxy.name.icontains(name_contains, autoescape=True))
        return await fetch_page(self.session, stmt, (Proxy.name, Proxy.id), page)

    async def add(self, proxy: Proxy) -> None:
        self.session.add(proxy)
        await self.session.flush()

    async def delete(self, proxy: Proxy) -> None:
        await self.session.delete(proxy)
        await self.session.flush()

    async def hosts_of(self, proxy_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Host]]:
        out: dict[uuid.UUID, list[Host]] = defaultdict(list)
        if not proxy_ids:
            return out
        rows = await self.session.execute(
            select(proxy_hosts.c.proxy_id, Host)
            .join(Host, Host.id == proxy_hosts.c.host_id)
            .where(proxy_hosts.c.proxy_id.in_(set(proxy_ids)))
            .order_by(Host.name, Host.id)
        )
        for proxy_id, host in rows.tuples():
            out[proxy_id].append(host)
        return out

    async def existing_host_ids(self, host_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        if not host_ids:
            return set()
        rows = await self.session.execute(select(Host.id).where(Host.id.in_(set(host_ids))))
        return set(rows.scalars())

    async def set_hosts(self, proxy_id: uuid.UUID, host_ids: Sequence[uuid.UUID]) -> None:
        await self.session.execute(delete(proxy_hosts).where(proxy_hosts.c.proxy_id == proxy_id))
        if host_ids:
            await self.session.execute(
                insert(proxy_hosts), [{"proxy_id": proxy_id, "host_id": h} for h in dict.fromkeys(host_ids)]
            )
