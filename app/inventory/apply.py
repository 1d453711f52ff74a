"""Apply one read of a vCenter's inventory to the catalog, incrementally.

Objects are matched by managed object id (VMs by instance UUID, which survives
re-registration); only what changed is written. Objects missing from the read are marked
gone, never deleted: a VM's restore points must stay reachable after the VM is deleted.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.space import free_percent, space_status
from app.inventory.models import Datastore, Host, InventoryObjectMixin, VirtualMachine, vm_datastores
from app.inventory.schemas import SyncCounts
from app.jobs.repository import JobRepository
from app.vadp.types import DatastoreInfo, HostInfo, InventorySnapshot, VmInfo
from app.vcenters.models import VCenter

log = logging.getLogger(__name__)

Row = TypeVar("Row", bound=InventoryObjectMixin)
Info = TypeVar("Info")


def _set_changed(row: object, values: dict[str, Any]) -> bool:
    changed = False
    for key, value in values.items():
        if getattr(row, key) != value:
            setattr(row, key, value)
            changed = True
    return changed


def _reconcile(
    session: AsyncSession,
    existing: dict[str, Row],
    incoming: Iterable[tuple[str, Info]],
    make: Callable[[], Row],
    values: Callable[[Info], dict[str, Any]],
    now: datetime,
) -> tuple[SyncCounts, dict[str, Row]]:
    counts = SyncCounts()
    seen: dict[str, Row] = {}
    for key, info in incoming:
        if key in seen:
            log.warning("vCenter returned %s twice in one read; keeping the first", key)
            continue
        row = existing.get(key)
        if row is None:
            row = make()
            for attr, value in values(info).items():
                setattr(row, attr, value)
            row.first_seen_at = now
            row.last_seen_at = now
            session.add(row)
            counts.added += 1
        else:
            changed = _set_changed(row, values(info))
            if row.gone_at is not None:
                row.gone_at = None
                counts.returned += 1
            elif changed:
                counts.updated += 1
        seen[key] = row
    for key, row in existing.items():
        if key not in seen and row.gone_at is None:
            row.gone_at = now
            counts.gone += 1
    counts.total = len(seen)
    return counts, seen


def _vm_key(vm: VmInfo) -> str:
    return vm.instance_uuid or f"moid:{vm.moid}"


async def apply_snapshot(
    session: AsyncSession, vcenter: VCenter, snapshot: InventorySnapshot, now: datetime
) -> tuple[SyncCounts, SyncCounts, SyncCounts]:
    vc_id, tenant_id = vcenter.id, vcenter.tenant_id

    hosts_existing = {
        h.moid: h for h in (await session.execute(select(Host).where(Host.vcenter_id == vc_id))).scalars()
    }

    def host_values(h: HostInfo) -> dict[str, Any]:
        return {
            "moid": h.moid,
            "name": h.name,
            "cluster": h.cluster,
            "datacenter": h.datacenter,
            "connection_state": h.connection_state,
            "power_state": h.power_state,
            "in_maintenance_mode": h.in_maintenance_mode,
        }

    host_counts, hosts = _reconcile(
        session,
        hosts_existing,
        ((h.moid, h) for h in snapshot.hosts),
        lambda: Host(id=uuid.uuid4(), vcenter_id=vc_id, tenant_id=tenant_id),
        host_values,
        now,
    )

    ds_existing = {
        d.moid: d
        for d in (await session.execute(select(Datastore).where(Datastore.vcenter_id == vc_id))).scalars()
    }

    def ds_values(d: DatastoreInfo) -> dict[str, Any]:
        return {
            "moid": d.moid,
            "name": d.name,
            "datacenter": d.datacenter,
            "type": d.type,
            "url": d.url,
            "capacity_bytes": d.capacity_bytes,
            "free_bytes": d.free_bytes,
            "free_percent": free_percent(d.capacity_bytes, d.free_bytes),
            "space_status": space_status(d.capacity_bytes, d.free_bytes).value,
            "accessible": d.accessible,
        }

    ds_counts, datastores = _reconcile(
        session,
        ds_existing,
        ((d.moid, d) for d in snapshot.datastores),
        lambda: Datastore(id=uuid.uuid4(), vcenter_id=vc_id, tenant_id=tenant_id),
        ds_values,
        now,
    )
    await session.flush()

    vms_existing = {
        vm.instance_uuid: vm
        for vm in (
            await session.execute(select(VirtualMachine).where(VirtualMachine.vcenter_id == vc_id))
        ).scalars()
    }

    def vm_values(v: VmInfo) -> dict[str, Any]:
        host = hosts.get(v.host_moid) if v.host_moid else None
        return {
            "moid": v.moid,
            "name": v.name,
            "instance_uuid": _vm_key(v),
            "bios_uuid": v.bios_uuid,
            "power_state": v.power_state,
            "host_id": host.id if host else None,
            "guest_os": v.guest_os,
            "folder_path": v.folder_path,
            "tags": list(v.tags),
            "disks": [asdict(d) for d in v.disks],
            "tools_running": v.tools_running,
            "is_template": v.is_template,
        }

    vm_counts, vms = _reconcile(
        session,
        vms_existing,
        ((_vm_key(v), v) for v in snapshot.vms),
        lambda: VirtualMachine(id=uuid.uuid4(), vcenter_id=vc_id, tenant_id=tenant_id),
        vm_values,
        now,
    )
    await session.flush()

    await _sync_vm_datastores(session, vc_id, snapshot.vms, vms, datastores)
    # Queued jobs follow their VM to the host it runs on now (claims look them up by host).
    await JobRepository(session).refresh_dispatch_hosts(vcenter_id=vc_id)
    for model in (Host, Datastore, VirtualMachine):
        await session.execute(
            update(model)
            .where(model.vcenter_id == vc_id, model.gone_at.is_(None))
            .values(last_seen_at=now)
            .execution_options(synchronize_session=False)
        )
    return host_counts, ds_counts, vm_counts


async def _sync_vm_datastores(
    session: AsyncSession,
    vc_id: uuid.UUID,
    infos: Iterable[VmInfo],
    vms: dict[str, VirtualMachine],
    datastores: dict[str, Datastore],
) -> None:
    desired: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for info in infos:
        vm = vms.get(_vm_key(info))
        if vm is None:
            continue
        for moid in info.datastore_moids:
            datastore = datastores.get(moid)
            if datastore is not None:
                desired.add((vm.id, datastore.id))
    current_rows = await session.execute(
        select(vm_datastores.c.vm_id, vm_datastores.c.datastore_id)
        .join(VirtualMachine, VirtualMachine.id == vm_datastores.c.vm_id)
        .where(VirtualMachine.vcenter_id == vc_id)
    )
    current = set(current_rows.tuples())
    seen_vm_ids = {vm.id for vm in vms.values()}
    # Keep the last known datastores of gone VMs: they say where the VM lived.
    stale = {(v, d) for v, d in current - desired if v in seen_vm_ids}
    for vm_id, ds_id in stale:
        await session.execute(
            delete(vm_datastores).where(vm_datastores.c.vm_id == vm_id, vm_datastores.c.datastore_id == ds_id)
        )
    missing = desired - current
    if missing:
        await session.execute(
            insert(vm_datastores), [{"vm_id": v, "datastore_id": d} for v, d in sorted(missing)]
        )
