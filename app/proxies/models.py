from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Table, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, JSONType, TimestampMixin

proxy_hosts = Table(
    "proxy_hosts",
    Base.metadata,
    Column("proxy_id", ForeignKey("proxies.id", ondelete="CASCADE"), primary_key=True),
    Column("host_id", ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Proxy(IdMixin, TimestampMixin, Base):
    """An agent that pulls work over the agent channel; its token is stored hashed.

    ``kind`` says which: a proxy moves image data for the ESXi hosts it serves; a guest agent
    (``kind = 'guest'``) runs inside one VM of one tenant (``vm_id``, ``tenant_id``) and takes that
    VM's application jobs. Both share the channel, leases, retries and liveness, hence one table.
    """

    __tablename__ = "proxies"
    __table_args__ = (
        # One guest agent per VM: a second registration is a conflict, not a silent duplicate.
        Index("uq_proxies_guest_vm", "vm_id", unique=True),
    )

    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_lookup_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    max_concurrent_jobs: Mapped[int] = mapped_column(Integer, default=2)
    serves_all_hosts: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    agent_version: Mapped[str | None] = mapped_column(String(40))
    agent_hostname: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20), default="proxy", server_default="proxy")
    tenant_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    vm_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"))
    # What a guest agent found in its VM (engines, databases), as its last heartbeat reported it.
    applications: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list, server_default="[]")
