from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Float, ForeignKey, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType

vm_datastores = Table(
    "vm_datastores",
    Base.metadata,
    Column("vm_id", ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True),
    Column("datastore_id", ForeignKey("datastores.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class InventoryObjectMixin(IdMixin):
    """Columns every synced object has. ``gone_at`` is set, never a delete, when an object
    disappears from vCenter, so that backups of a vanished VM stay reachable."""

    moid: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(400))
    first_seen_at: Mapped[datetime] = mapped_column()
    last_seen_at: Mapped[datetime] = mapped_column()
    gone_at: Mapped[datetime | None] = mapped_column()


class Host(InventoryObjectMixin, Base):
    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("vcenter_id", "moid"),)

    vcenter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vcenters.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    cluster: Mapped[str | None] = mapped_column(String(400))
    datacenter: Mapped[str | None] = mapped_column(String(400))
    connection_state: Mapped[str] = mapped_column(String(40))
    power_state: Mapped[str] = mapped_column(String(40))
    in_maintenance_mode: Mapped[bool] = mapped_column(default=False)


class Datastore(InventoryObjectMixin, Base):
    __tablename__ = "datastores"
    __table_args__ = (UniqueConstraint("vcenter_id", "moid"),)

    vcenter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vcenters.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    datacenter: Mapped[str | None] = mapped_column(String(400))
    type: Mapped[str] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(String(1000))
    capacity_bytes: Mapped[int] = mapped_column(BigInteger)
    free_bytes: Mapped[int] = mapped_column(BigInteger)
    free_percent: Mapped[float] = mapped_column(Float)
    space_status: Mapped[str] = mapped_column(String(20), index=True)
    accessible: Mapped[bool] = mapped_column(default=True)


class VirtualMachine(InventoryObjectMixin, Base):
    __tablename__ = "vms"
    __table_args__ = (UniqueConstraint("vcenter_id", "instance_uuid"),)

    vcenter_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vcenters.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenants.id"), index=True)
    instance_uuid: Mapped[str] = mapped_column(String(64))
    bios_uuid: Mapped[str | None] = mapped_column(String(64))
    power_state: Mapped[str] = mapped_column(String(40))
    host_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("hosts.id", ondelete="SET NULL"), index=True)
    guest_os: Mapped[str | None] = mapped_column(String(400))
    folder_path: Mapped[str] = mapped_column(String(2000))
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    disks: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    tools_running: Mapped[bool] = mapped_column(default=False)
    is_template: Mapped[bool] = mapped_column(default=False)
    protection_status: Mapped[str] = mapped_column(String(20), default="unprotected", index=True)
    protection_policy_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("policies.id", ondelete="SET NULL"), index=True
    )
    protection_reason: Mapped[str | None] = mapped_column(String(1000))
    # When its protection last began or changed policy (a policy edit, a tag or folder change in
    # vCenter): where the RPO recorder starts its clock, not months earlier at first sight.
    protection_changed_at: Mapped[datetime | None] = mapped_column()
    conflicting_policy_ids: Mapped[list[str]] = mapped_column(JSONType, default=list)
