"""Registering proxies, their tokens and their heartbeats."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import tokens
from app.auth.principal import Principal
from app.clock import Clock
from app.contracts.agent import Heartbeat, HeartbeatAck, ServedHost
from app.db.dialect import serialize_claims
from app.domain.jobs import AgentKind
from app.errors import Conflict, InvalidInput, NotFound, Unauthorized
from app.jobs.repository import JobRepository
from app.pagination import PageRequest
from app.proxies.liveness import ProxyLiveness
from app.proxies.models import Proxy
from app.proxies.repository import ProxyRepository
from app.proxies.schemas import ProxyCreate, ProxyHostRef, ProxyRead, ProxyUpdate

_TOKEN_KINDS = {tokens.PROXY_TOKEN_PREFIX: AgentKind.PROXY, tokens.GUEST_TOKEN_PREFIX: AgentKind.GUEST}


class ProxyService:
    def __init__(self, session: AsyncSession, clock: Clock, liveness: ProxyLiveness) -> None:
        self.session = session
        self.repo = ProxyRepository(session)
        self.clock = clock
        self.liveness = liveness

    async def get(self, principal: Principal, proxy_id: uuid.UUID) -> Proxy:
        principal.require_operator("manage proxies")
        proxy = await self.repo.get(proxy_id)
        if proxy is None or proxy.kind != AgentKind.PROXY.value:
            raise NotFound(f"Proxy {proxy_id} does not exist.")
        return proxy

    async def list_page(
        self, principal: Principal, page: PageRequest, host_id: uuid.UUID | None, name_contains: str | None
    ) -> tuple[list[Proxy], int]:
        principal.require_operator("manage proxies")
        return await self.repo.list_page(page, host_id, name_contains)

    async def register(self, principal: Principal, data: ProxyCreate) -> tuple[Proxy, str]:
        principal.require_operator("register proxies")
        await self._ensure_name_free(data.name)
        await self._ensure_hosts_exist(data.host_ids)
        issued = tokens.issue(tokens.PROXY_TOKEN_PREFIX)
        now = self.clock.now()
        proxy = Proxy(
            id=uuid.uuid4(),
            name=data.name,
            token_lookup_id=issued.lookup_id,
            token_hash=issued.secret_hash,
            max_concurrent_jobs=data.max_concurrent_jobs,
            created_at=now,
            updated_at=now,
        )
        await self.repo.add(proxy)
        await self.repo.set_hosts(proxy.id, data.host_ids)
        return proxy, issued.secret

    async def update(self, principal: Principal, proxy_id: uuid.UUID, data: ProxyUpdate) -> Proxy:
        proxy = await self.get(principal, proxy_id)
        if data.name is not None and data.name != proxy.name:
            await self._ensure_name_free(data.name)
            proxy.name = data.name
        if data.max_concurrent_jobs is not None:
            proxy.max_concurrent_jobs = data.max_concurrent_jobs
        if data.host_ids is not None:
            await self._ensure_hosts_exist(data.host_ids)
            await self.repo.set_hosts(proxy.id, data.host_ids)
        proxy.updated_at = self.clock.now()
        return proxy

    async def rotate_token(self, principal: Principal, proxy_id: uuid.UUID) -> tuple[Proxy, str]:
        proxy = await self.get(principal, proxy_id)
        issued = tokens.issue(tokens.PROXY_TOKEN_PREFIX)
        proxy.token_lookup_id = issued.lookup_id
        proxy.token_hash = issued.secret_hash
        proxy.updated_at = self.clock.now()
        return proxy, issued.secret

    async def delete(self, principal: Principal, proxy_id: uuid.UUID) -> None:
        """Refused (409) while jobs run on the proxy: a deleted proxy's jobs would lose the name
        of the snapshot they may leave (it carries the proxy's id), so the reaper could not queue
        its clean-up. Under the claim lock, so no claim hands it a job between count and delete."""
        proxy = await self.get(principal, proxy_id)
        await serialize_claims(self.session)
        running = await JobRepository(self.session).running_for_proxy(proxy.id)
        if running:
            raise Conflict(
                f"Proxy '{proxy.name}' still runs {running} job(s). Stop its agent: each job goes back "
                "to the queue when its lease lapses (two minutes after its last report by default), "
                "with a clean-up of the snapshot it may have left. Then delete the proxy."
            )
        await self.repo.delete(proxy)

    async def to_read(self, proxies: list[Proxy]) -> list[ProxyRead]:
        hosts = await self.repo.hosts_of([p.id for p in proxies])
        return [
            ProxyRead(
                id=p.id,
                name=p.name,
                status=self.liveness.status(p).value,
                hosts=[
                    ProxyHostRef(
                        id=h.id,
                        name=h.name,
                        vcenter_id=h.vcenter_id,
                        tenant_id=h.tenant_id,
                        gone=h.gone_at is not None,
                    )
                    for h in hosts.get(p.id, [])
                ],
                max_concurrent_jobs=p.max_concurrent_jobs,
                last_heartbeat_at=p.last_heartbeat_at,
                agent_version=p.agent_version,
                agent_hostname=p.agent_hostname,
                address=p.address,
                created_at=p.created_at,
                updated_at=p.updated_at,
            )
            for p in proxies
        ]

    # agent side

    async def authenticate_agent(self, bearer: str | None) -> Proxy:
        """A proxy (token 'vmrp_...') or a guest agent (token 'vmrg_...'): both use the agent channel."""
        if not bearer:
            raise Unauthorized("Send the agent's token as 'Authorization: Bearer <token>'.")
        parsed = tokens.parse(bearer)
        kind = _TOKEN_KINDS.get(parsed.prefix) if parsed is not None else None
        if parsed is None or kind is None:
            raise Unauthorized(
                "This endpoint takes a proxy token ('vmrp_...') or a guest agent token ('vmrg_...')."
            )
        proxy = await self.repo.get_by_token_lookup(parsed.lookup_id)
        if proxy is None or proxy.kind != kind.value or not tokens.matches(parsed, proxy.token_hash):
            raise Unauthorized("The agent token is not valid; it may have been rotated or the agent deleted.")
        return proxy

    async def heartbeat(
        self, caller: Proxy, beat: Heartbeat, address: str | None, interval_s: float
    ) -> HeartbeatAck:
        proxy = await self.repo.get(caller.id)
        if proxy is None:
            raise Unauthorized("This proxy was deleted; register it again.")
        now = self.clock.now()
        proxy.last_heartbeat_at = now
        proxy.agent_version = beat.agent_version
        proxy.agent_hostname = beat.hostname
        proxy.address = address
        if proxy.kind == AgentKind.GUEST.value and beat.applications is not None:
            proxy.applications = [a.model_dump(mode="json") for a in beat.applications]
        hosts = (await self.repo.hosts_of([proxy.id])).get(proxy.id, [])
        return HeartbeatAck(
            proxy_id=proxy.id,
            name=proxy.name,
            kind=proxy.kind,
            vm_id=proxy.vm_id,
            server_time=now,
            heartbeat_interval_s=interval_s,
            max_concurrent_jobs=proxy.max_concurrent_jobs,
            hosts=[
                ServedHost(id=h.id, moid=h.moid, name=h.name, vcenter_id=h.vcenter_id)
                for h in hosts
                if h.gone_at is None
            ],
        )

    async def _ensure_name_free(self, name: str) -> None:
        if await self.repo.get_by_name(name) is not None:
            raise Conflict(f"A proxy named '{name}' already exists; choose another name.")

    async def _ensure_hosts_exist(self, host_ids: list[uuid.UUID]) -> None:
        found = await self.repo.existing_host_ids(host_ids)
        for index, host_id in enumerate(host_ids):
            if host_id not in found:
                raise InvalidInput(
                    f"Host {host_id} does not exist; sync the vCenter and use an id from GET /api/v1/hosts.",
                    field=["body", "host_ids", index],
                )


async def ensure_embedded_proxy(
    session: AsyncSession, clock: Clock, workers: int, name: str
) -> tuple[Proxy, str]:
    """The proxy that ``serve`` runs in-process for single-machine set-ups: it serves every
    host. Its token is re-issued at each start and never leaves the process."""
    repo = ProxyRepository(session)
    issued = tokens.issue(tokens.PROXY_TOKEN_PREFIX)
    now = clock.now()
    proxy = await repo.get_by_name(name)
    if proxy is None:
        proxy = Proxy(
            id=uuid.uuid4(),
            name=name,
            serves_all_hosts=True,
            created_at=now,
            updated_at=now,
            token_lookup_id=issued.lookup_id,
            token_hash=issued.secret_hash,
            max_concurrent_jobs=workers,
        )
        await repo.add(proxy)
    else:
        proxy.token_lookup_id = issued.lookup_id
        proxy.token_hash = issued.secret_hash
        proxy.serves_all_hosts = True
        proxy.max_concurrent_jobs = workers
        proxy.updated_at = now
    return proxy, issued.secret
