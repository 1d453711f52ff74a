from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from app.schemas import InputModel, OutputModel


class ProxyCreate(InputModel):
    name: str = Field(min_length=1, max_length=200, examples=["proxy-esx01"])
    host_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000, description="Hosts this proxy serves.")
    max_concurrent_jobs: int = Field(default=2, ge=1, le=64)


class ProxyUpdate(InputModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    host_ids: list[uuid.UUID] | None = Field(default=None, min_length=1, max_length=1000)
    max_concurrent_jobs: int | None = Field(default=None, ge=1, le=64)


class ProxyHostRef(OutputModel):
    id: uuid.UUID
    name: str
    vcenter_id: uuid.UUID
    tenant_id: uuid.UUID
    gone: bool


class ProxyRead(OutputModel):
    id: uuid.UUID
    name: str
    status: str = Field(description="online, stale (missed heartbeats) or offline")
    hosts: list[ProxyHostRef]
    max_concurrent_jobs: int
    last_heartbeat_at: datetime | None
    agent_version: str | None
    agent_hostname: str | None
    address: str | None
    created_at: datetime
    updated_at: datetime


class ProxyCreated(ProxyRead):
    token: str = Field(description="The agent's token. It is shown only in this response; store it now.")
