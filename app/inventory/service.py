"""Reading the synced inventory, with what a user needs to know about each object."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.domain.proxy_status import ProxyStatus
from app.domain.space import SpaceStatus
from app.errors import NotFound
from app.inventory.models import Host, VirtualMachine
from app.inventory.repository import (
    DatastoreBrief,
    DatastoreFilter,
    HostBrief,
    HostFilter,
    InventoryRepository,
    VmFilter,
)
from app.inventory.schemas import (
    DatastoreRead,
    DatastoreRef,
    DiskRead,
    HostRead,
    HostRef,
    ProtectionRead,
    ProxyRef,
    VmRead,
)
from app.pagination import PageRequest
from app.proxies.liveness import ProxyLiveness


class InventoryService:
    def __init__(self, session: AsyncSession, liveness: ProxyLiveness) -> None:
        self.repo = InventoryRepository(session)
        self.liveness = liveness

    async def list_hosts(
        self, principal: Principal, f: HostFilter, page: PageRequest
    ) -> tuple[list[HostRead], int]:
        hosts, total = await self.repo.list_hosts(principal.tenant_scope, f, page, self.liveness.online_since)
        return await self._host_reads(hosts), total

    async def get_host(self, principal: Principal, host_id: uuid.UUID) -> HostRead:
        host = await self.repo.get_host(host_id, principal.tenant_scope)
        if host is None:
            raise NotFound(f"Host {host_id} does not exist.")
        return (await self._host_reads([host]))[0]

    async def _host_reads(self, hosts: list[Host]) -> list[HostRead]:
        ids = [h.id for h in hosts]
        proxies = await self.repo.proxies_for_hosts(ids)
        protected = await self.repo.protected_vm_counts(ids)
        reads = []
        for host in hosts:
            host_proxies = proxies.get(host.id, [])
            best = self.liveness.best(host_proxies)
            reads.append(
                HostRead.model_validate(
                    {
                        **_columns(host),
                        "proxies": [
                            ProxyRef(id=p.id, name=p.name, status=self.liveness.status(p).value)
                            for p in host_proxies
                        ],
                        "proxy_status": best,
                        "protected_vm_count": protected.get(host.id, 0),
                        "needs_proxy": protected.get(host.id, 0) > 0 and best != ProxyStatus.ONLINE.value,
                    }
                )
            )
        return reads

    async def list_datastores(
        self, principal: Principal, f: DatastoreFilter, page: PageRequest
    ) -> tuple[list[DatastoreRead], int]:
        items, total = await self.repo.list_datastores(principal.tenant_scope, f, page)
        return [DatastoreRead.model_validate(d) for d in items], total

    async def get_datastore(self, principal: Principal, datastore_id: uuid.UUID) -> DatastoreRead:
        datastore = await self.repo.get_datastore(datastore_id, principal.tenant_scope)
        if datastore is None:
            raise NotFound(f"Datastore {datastore_id} does not exist.")
        return DatastoreRead.model_validate(datastore)

    async def list_vms(
        self, principal: Principal, f: VmFilter, page: PageRequest
    ) -> tuple[list[VmRead], int]:
        vms, total = await self.repo.list_vms(principal.tenant_scope, f, page)
        return await self._vm_reads(vms), total

    async def get_vm(self, principal: Principal, vm_id: uuid.UUID) -> VmRead:
        vm = await self.repo.get_vm(vm_id, principal.tenant_scope)
        if vm is None:
            raise NotFound(f"VM {vm_id} does not exist.")
        return (await self._vm_reads([vm]))[0]

    async def _vm_reads(self, vms: list[VirtualMachine]) -> list[VmRead]:
        host_ids = [vm.host_id for vm in vms if vm.host_id is not None]
        hosts = await self.repo.hosts_by_ids(host_ids)
        proxies = await self.repo.proxies_for_hosts(host_ids)
        datastores = await self.repo.datastores_for_vms([vm.id for vm in vms])
        waiting = await self.repo.waiting_reasons([vm.id for vm in vms])
        policy_names = await self.repo.policy_names(
            [vm.protection_policy_id for vm in vms if vm.protection_policy_id is not None]
        )
        reads = []
        for vm in vms:
            host = hosts.get(vm.host_id) if vm.host_id else None
            best = self.liveness.best(proxies.get(vm.host_id, [])) if vm.host_id else "none"
            vm_datastores = datastores.get(vm.id, [])
            reads.append(
                VmRead.model_validate(
                    {
                        **_columns(vm),
                        "host": HostRef(id=host.id, name=host.name) if host else None,
                        "datastores": [
                            DatastoreRef(
                                id=d.id, name=d.name, free_percent=d.free_percent, space_status=d.space_status
                            )
                            for d in vm_datastores
                        ],
                        "disks": [DiskRead.model_validate(d) for d in vm.disks or []],
                        "tags": list(vm.tags or []),
                        "protection": ProtectionRead(
                            status=vm.protection_status,
                            policy_id=vm.protection_policy_id,
                            policy_name=policy_names.get(vm.protection_policy_id)
                            if vm.protection_policy_id
                            else None,
                            reason=vm.protection_reason,
                            conflicting_policy_ids=[uuid.UUID(p) for p in vm.conflicting_policy_ids or []],
                        ),
                        "proxy_status": best,
                        "warnings": vm_warnings(vm, host, best, vm_datastores)
                        + ([f"A backup is waiting: {waiting[vm.id]}."] if vm.id in waiting else []),
                    }
                )
            )
        return reads


def vm_warnings(
    vm: VirtualMachine, host: HostBrief | None, proxy_state: str, datastores: list[DatastoreBrief]
) -> list[str]:
    """What stands between this VM and a successful backup, in words a user can act on."""
    warnings: list[str] = []
    if vm.gone_at is not None:
        warnings.append("The VM no longer exists in vCenter; its backups are kept.")
        return warnings
    if vm.protection_status == "conflict":
        warnings.append(f"Protection conflict: {vm.protection_reason}.")
    if vm.protection_status == "protected" and proxy_state != ProxyStatus.ONLINE.value:
        host_name = host.name if host else "unknown host"
        if proxy_state == "none":
            warnings.append(f"No proxy is registered for host {host_name}; register one to back up this VM.")
        else:
            warnings.append(f"No online proxy for host {host_name} (best proxy is {proxy_state}).")
    for datastore in datastores:
        if datastore.space_status == SpaceStatus.CRITICAL.value:
            warnings.append(
                f"Datastore {datastore.name} has {datastore.free_percent:.1f}% free (below 10%): "
                "backups of this VM will not start."
            )
        elif datastore.space_status == SpaceStatus.WARNING.value:
            warnings.append(
                f"Datastore {datastore.name} has {datastore.free_percent:.1f}% free (below 15%): "
                "the VM does not meet the free-space requirement."
            )
    return warnings


def _columns(obj: object) -> dict[str, object]:
    table = obj.__table__  # type: ignore[attr-defined]
    return {c.key: getattr(obj, c.key) for c in table.columns}
