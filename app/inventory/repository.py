"""All SQL about synced inventory (hosts, datastores, VMs)."""

from __future__ import annotations

import functools
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, bindparam, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.paging import fetch_page
from app.db.warmup import hot_statement
from app.domain.protection import tag_matches
from app.inventory.models import Datastore, Host, VirtualMachine, vm_datastores
from app.jobs.models import Job
from app.pagination import PageRequest
from app.policies.models import Policy
from app.proxies.models import Proxy, proxy_hosts


class HostBrief(NamedTuple):
    """What a VM's read shows of its host."""

    id: uuid.UUID
    name: str


class ProxyBrief(NamedTuple):
    """What a host's or VM's read shows of a proxy: enough for its status."""

    id: uuid.UUID
    name: str
    last_heartbeat_at: datetime | None


class DatastoreBrief(NamedTuple):
    """What a VM's read shows of its datastores: enough for its space warnings."""

    id: uuid.UUID
    name: str
    free_percent: float
    space_status: str


@hot_statement
@functools.cache
def _host_and_datastore() -> Select[tuple[Host, Datastore]]:
    """A restore to a new location checks its host and datastore together: one round trip,
    built once. Built on first use, not at import: a foreign-key column takes its type from the
    column it references only once that table is loaded, and a bound parameter compared with it
    earlier stays untyped (SQLite then cannot bind a UUID)."""
    return (
        select(Host, Datastore)
        .outerjoin(
            Datastore,
            and_(Datastore.id == bindparam("datastore_id"), Datastore.tenant_id == bindparam("tenant_id")),
        )
        .where(Host.id == bindparam("host_id"), Host.tenant_id == bindparam("tenant_id"))
    )


@functools.cache
def _vm_by_id(scoped: bool) -> Select[tuple[VirtualMachine]]:
    """A VM by id (every job assignment reads its VM's): built once, like the statements above."""
    stmt = select(VirtualMachine).where(VirtualMachine.id == bindparam("vm_id"))
    return stmt.where(VirtualMachine.tenant_id == bindparam("scope")) if scoped else stmt


@functools.cache
def _vm_name() -> Select[tuple[str]]:
    return select(VirtualMachine.name).where(VirtualMachine.id == bindparam("vm_id"))


@dataclass(frozen=True)
class HostFilter:
    vcenter_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    cluster: str | None = None
    connection_state: str | None = None
    name_contains: str | None = None
    has_online_proxy: bool | None = None
    include_gone: bool = False


@dataclass(frozen=True)
class DatastoreFilter:
    vcenter_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    space_status: str | None = None
    name_contains: str | None = None
    include_gone: bool = False


@dataclass(frozen=True)
class VmFilter:
    vcenter_id: uuid.UUID | None = None
    tenant_id: uuid.UUID | None = None
    host_id: uuid.UUID | None = None
    datastore_id: uuid.UUID | None = None
    power_state: str | None = None
    protection_status: str | None = None
    policy_id: uuid.UUID | None = None
    name_contains: str | None = None
    folder: str | None = None
    tag: str | None = None
    include_gone: bool = False


class InventoryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # hosts

    def _online_proxy_exists(self, online_since: datetime) -> Any:
        serving = exists(
            select(1)
            .select_from(proxy_hosts.join(Proxy, Proxy.id == proxy_hosts.c.proxy_id))
            .where(proxy_hosts.c.host_id == Host.id, Proxy.last_heartbeat_at >= online_since)
        )
        everywhere = exists(
            select(1).where(Proxy.serves_all_hosts.is_(True), Proxy.last_heartbeat_at >= online_since)
        )
        return serving | everywhere

    async def list_hosts(
        self, scope: uuid.UUID | None, f: HostFilter, page: PageRequest, online_since: datetime
    ) -> tuple[list[Host], int]:
        stmt = select(Host)
        for column, value in (
            (Host.tenant_id, scope),
            (Host.tenant_id, f.tenant_id),
            (Host.vcenter_id, f.vcenter_id),
            (Host.cluster, f.cluster),
            (Host.connection_state, f.connection_state),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.name_contains:
            stmt = stmt.where(Host.name.icontains(f.name_contains, autoescape=True))
        if not f.include_gone:
            stmt = stmt.where(Host.gone_at.is_(None))
        if f.has_online_proxy is not None:
            online = self._online_proxy_exists(online_since)
            stmt = stmt.where(online if f.has_online_proxy else ~online)
        return await fetch_page(self.session, stmt, (Host.name, Host.id), page)

    async def get_host(self, host_id: uuid.UUID, scope: uuid.UUID | None) -> Host | None:
        stmt = select(Host).where(Host.id == host_id)
        if scope is not None:
            stmt = stmt.where(Host.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def host_and_datastore(
        self, host_id: uuid.UUID, datastore_id: uuid.UUID, tenant_id: uuid.UUID
    ) -> tuple[Host | None, Datastore | None]:
        """This tenant's host and datastore; (None, None) when the host is not the tenant's."""
        params = {"host_id": host_id, "datastore_id": datastore_id, "tenant_id": tenant_id}
        row = (await self.session.execute(_host_and_datastore(), params)).tuples().first()
        return (row[0], row[1]) if row is not None else (None, None)

    # The look-ups below serve pages of reads: they select the few columns a read shows, as
    # tuples. Loading whole ORM objects (identity map, every column) for a page's 50 hosts,
    # proxies and datastores cost more than the rest of the page.

    async def hosts_by_ids(self, host_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, HostBrief]:
        if not host_ids:
            return {}
        rows = await self.session.execute(select(Host.id, Host.name).where(Host.id.in_(set(host_ids))))
        return {host_id: HostBrief(host_id, name) for host_id, name in rows.tuples()}

    async def proxies_for_hosts(self, host_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[ProxyBrief]]:
        """Each host's proxies by name: those registered for it, then those serving every host."""
        out: dict[uuid.UUID, list[ProxyBrief]] = defaultdict(list)
        if not host_ids:
            return out
        brief = (Proxy.id, Proxy.name, Proxy.last_heartbeat_at)
        rows = await self.session.execute(
            select(proxy_hosts.c.host_id, *brief)
            .join(Proxy, Proxy.id == proxy_hosts.c.proxy_id)
            .where(proxy_hosts.c.host_id.in_(set(host_ids)))
            .order_by(Proxy.name)
        )
        for host_id, proxy_id, name, heartbeat in rows.tuples():
            out[host_id].append(ProxyBrief(proxy_id, name, heartbeat))
        everywhere = await self.session.execute(
            select(*brief).where(Proxy.serves_all_hosts.is_(True)).order_by(Proxy.name)
        )
        for proxy_id, name, heartbeat in everywhere.tuples():
            for host_id in set(host_ids):
                out[host_id].append(ProxyBrief(proxy_id, name, heartbeat))
        return out

    async def protected_vm_counts(self, host_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
        if not host_ids:
            return {}
        rows = await self.session.execute(
            select(VirtualMachine.host_id, func.count())
            .where(
                VirtualMachine.host_id.in_(set(host_ids)),
                VirtualMachine.protection_status == "protected",
                VirtualMachine.gone_at.is_(None),
            )
            .group_by(VirtualMachine.host_id)
        )
        return {hid: n for hid, n in rows.tuples() if hid is not None}

    # datastores

    async def list_datastores(
        self, scope: uuid.UUID | None, f: DatastoreFilter, page: PageRequest
    ) -> tuple[list[Datastore], int]:
        stmt = select(Datastore)
        for column, value in (
            (Datastore.tenant_id, scope),
            (Datastore.tenant_id, f.tenant_id),
            (Datastore.vcenter_id, f.vcenter_id),
            (Datastore.space_status, f.space_status),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.name_contains:
            stmt = stmt.where(Datastore.name.icontains(f.name_contains, autoescape=True))
        if not f.include_gone:
            stmt = stmt.where(Datastore.gone_at.is_(None))
        return await fetch_page(self.session, stmt, (Datastore.name, Datastore.id), page)

    async def get_datastore(self, datastore_id: uuid.UUID, scope: uuid.UUID | None) -> Datastore | None:
        stmt = select(Datastore).where(Datastore.id == datastore_id)
        if scope is not None:
            stmt = stmt.where(Datastore.tenant_id == scope)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def datastores_for_vms(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[DatastoreBrief]]:
        out: dict[uuid.UUID, list[DatastoreBrief]] = defaultdict(list)
        if not vm_ids:
            return out
        rows = await self.session.execute(
            select(
                vm_datastores.c.vm_id,
                Datastore.id,
                Datastore.name,
                Datastore.free_percent,
                Datastore.space_status,
            )
            .join(Datastore, Datastore.id == vm_datastores.c.datastore_id)
            .where(vm_datastores.c.vm_id.in_(set(vm_ids)))
            .order_by(Datastore.name)
        )
        for vm_id, *datastore in rows.tuples():
            out[vm_id].append(DatastoreBrief(*datastore))
        return out

    # VMs

    async def list_vms(
        self, scope: uuid.UUID | None, f: VmFilter, page: PageRequest
    ) -> tuple[list[VirtualMachine], int]:
        stmt = select(VirtualMachine)
        for column, value in (
            (VirtualMachine.tenant_id, scope),
            (VirtualMachine.tenant_id, f.tenant_id),
            (VirtualMachine.vcenter_id, f.vcenter_id),
            (VirtualMachine.host_id, f.host_id),
            (VirtualMachine.power_state, f.power_state),
            (VirtualMachine.protection_status, f.protection_status),
            (VirtualMachine.protection_policy_id, f.policy_id),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if f.datastore_id is not None:
            stmt = stmt.where(
                exists(
                    select(1).where(
                        vm_datastores.c.vm_id == VirtualMachine.id,
                        vm_datastores.c.datastore_id == f.datastore_id,
                    )
                )
            )
        if f.name_contains:
            stmt = stmt.where(VirtualMachine.name.icontains(f.name_contains, autoescape=True))
        if f.folder:
            prefix = f.folder.rstrip("/")
            stmt = stmt.where(
                (VirtualMachine.folder_path == prefix)
                | VirtualMachine.folder_path.startswith(prefix + "/", autoescape=True)
            )
        if not f.include_gone:
            stmt = stmt.where(VirtualMachine.gone_at.is_(None))
        if f.tag:
            # Tags are JSON; filter the candidates in Python to stay dialect-neutral, keeping
            # exact totals. Tag filters run on one tenant's VMs, which is a bounded set.
            rows = (
                await self.session.execute(stmt.order_by(VirtualMachine.name, VirtualMachine.id))
            ).scalars()
            matching = [vm for vm in rows if tag_matches(f.tag, vm.tags or [])]
            return matching[page.offset : page.offset + page.limit], len(matching)
        return await fetch_page(self.session, stmt, (VirtualMachine.name, VirtualMachine.id), page)

    async def get_vm(self, vm_id: uuid.UUID, scope: uuid.UUID | None) -> VirtualMachine | None:
        params = {"vm_id": vm_id, "scope": scope}
        return (await self.session.execute(_vm_by_id(scope is not None), params)).scalar_one_or_none()

    async def vm_name(self, vm_id: uuid.UUID) -> str | None:
        """Only the name (a restore point keeps it), not the whole row."""
        return (await self.session.execute(_vm_name(), {"vm_id": vm_id})).scalar_one_or_none()

    async def policy_names(self, policy_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        if not policy_ids:
            return {}
        rows = await self.session.execute(
            select(Policy.id, Policy.name).where(Policy.id.in_(set(policy_ids)))
        )
        return {policy_id: name for policy_id, name in rows.tuples()}

    async def vcenter_ids_for_proxy(self, proxy_id: uuid.UUID, all_hosts: bool) -> list[uuid.UUID]:
        stmt = select(Host.vcenter_id).distinct()
        if not all_hosts:
            stmt = stmt.join(proxy_hosts, proxy_hosts.c.host_id == Host.id).where(
                proxy_hosts.c.proxy_id == proxy_id
            )
        return list((await self.session.execute(stmt)).scalars())

    async def waiting_reasons(self, vm_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
        """Why the VMs' queued jobs wait, if they do."""
        if not vm_ids:
            return {}
        rows = await self.session.execute(
            select(Job.vm_id, Job.waiting_reason).where(
                Job.vm_id.in_(set(vm_ids)), Job.state == "queued", Job.waiting_reason.is_not(None)
            )
        )
        return {vm_id: reason for vm_id, reason in rows.tuples() if reason}
