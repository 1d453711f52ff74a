"""Registering guest agents: one per VM, owned by the VM's tenant, with a token of its own.

A customer may register an agent for a VM of its own tenant (it installs the agent in its VM);
operators for any VM. The agent then talks to the same agent channel as proxies, and only ever
sees its own VM's application jobs.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import tokens
from app.auth.principal import Principal
from app.clock import Clock
from app.domain.jobs import AgentKind
from app.errors import Conflict, InvalidInput, NotFound
from app.guests.repository import GuestAgentRepository
from app.guests.schemas import GuestAgentCreate, GuestAgentRead
from app.inventory.repository import InventoryRepository
from app.pagination import PageRequest
from app.proxies.liveness import ProxyLiveness
from app.proxies.models import Proxy
from app.proxies.repository import ProxyRepository


class GuestAgentService:
    def __init__(self, session: AsyncSession, clock: Clock, liveness: ProxyLiveness) -> None:
        self.repo = GuestAgentRepository(session)
        self.proxies = ProxyRepository(session)
        self.inventory = InventoryRepository(session)
        self.clock = clock
        self.liveness = liveness

    async def get(self, principal: Principal, agent_id: uuid.UUID) -> Proxy:
        agent = await self.repo.get(agent_id, principal.tenant_scope)
        if agent is None:
            raise NotFound(f"Guest agent {agent_id} does not exist.")
        return agent

    async def list_page(
        self, principal: Principal, vm_id: uuid.UUID | None, page: PageRequest
    ) -> tuple[list[Proxy], int]:
        return await self.repo.list_page(principal.tenant_scope, vm_id, page)

    async def register(self, principal: Principal, data: GuestAgentCreate) -> tuple[Proxy, str]:
        vm = await self.inventory.get_vm(data.vm_id, principal.tenant_scope)
        if vm is None or vm.gone_at is not None:
            raise InvalidInput(
                f"VM {data.vm_id} does not exist; use an id from GET /api/v1/vms.", field=["body", "vm_id"]
            )
        if await self.repo.for_vm(vm.id) is not None:
            raise Conflict(
                f"VM '{vm.name}' already has a guest agent; issue it a new token "
                "(POST /guest-agents/{id}/token) or delete it first."
            )
        issued = tokens.issue(tokens.GUEST_TOKEN_PREFIX)
        now = self.clock.now()
        agent = Proxy(
            id=uuid.uuid4(),
            kind=AgentKind.GUEST.value,
            # Derived from the VM, never chosen by a caller: proxy names are unique service-wide,
            # and a clash on a customer-chosen name would reveal another tenant's agent.
            name=f"guest-{vm.id}",
            tenant_id=vm.tenant_id,
            vm_id=vm.id,
            token_lookup_id=issued.lookup_id,
            token_hash=issued.secret_hash,
            max_concurrent_jobs=2,  # a quiesce must be taken while an application backup runs
            applications=[],
            created_at=now,
            updated_at=now,
        )
        await self.proxies.add(agent)
        return agent, issued.secret

    async def rotate_token(self, principal: Principal, agent_id: uuid.UUID) -> tuple[Proxy, str]:
        agent = await self.get(principal, agent_id)
        issued = tokens.issue(tokens.GUEST_TOKEN_PREFIX)
        agent.token_lookup_id = issued.lookup_id
        agent.token_hash = issued.secret_hash
        agent.updated_at = self.clock.now()
        return agent, issued.secret

    async def delete(self, principal: Principal, agent_id: uuid.UUID) -> None:
        await self.proxies.delete(await self.get(principal, agent_id))

    async def to_read(self, agents: list[Proxy]) -> list[GuestAgentRead]:
        names = await self.repo.vm_names([a.vm_id for a in agents if a.vm_id is not None])
        reads = []
        for agent in agents:
            assert agent.vm_id is not None and agent.tenant_id is not None
            reads.append(
                GuestAgentRead(
                    id=agent.id,
                    tenant_id=agent.tenant_id,
                    vm_id=agent.vm_id,
                    vm_name=names.get(agent.vm_id, ""),
                    status=self.liveness.status(agent).value,
                    applications=list(agent.applications or []),
                    last_heartbeat_at=agent.last_heartbeat_at,
                    agent_version=agent.agent_version,
                    agent_hostname=agent.agent_hostname,
                    created_at=agent.created_at,
                    updated_at=agent.updated_at,
                )
            )
        return reads
