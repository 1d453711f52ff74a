from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, Integer, String, Table, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin

proxy_hosts = Table(
    "proxy_hosts",
    Base.metadata,
    Column("proxy_id", ForeignKey("proxies.id", ondelete="CASCADE"), primary_key=True),
    Column("host_id", ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Proxy(IdMixin, TimestampMixin, Base):
    """A proxy agent that moves data for the hosts it serves. Its token is stored hashed."""

    __tablename__ = "proxies"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    token_lookup_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    max_concurrent_jobs: Mapped[int] = mapped_column(Integer, default=2)
    serves_all_hosts: Mapped[bool] = mapped_column(default=False, server_default=false())
    last_heartbeat_at: Mapped[datetime | None] = mapped_column()
    agent_version: Mapped[str | None] = mapped_column(String(40))
    agent_hostname: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(255))
