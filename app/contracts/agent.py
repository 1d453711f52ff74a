"""The agent channel: what a proxy sends and receives."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_version: str = Field(max_length=40)
    hostname: str = Field(max_length=255)
    running_jobs: int = Field(default=0, ge=0)


class ServedHost(BaseModel):
    id: uuid.UUID
    moid: str
    name: str
    vcenter_id: uuid.UUID


class HeartbeatAck(BaseModel):
    proxy_id: uuid.UUID
    name: str
    server_time: datetime
    heartbeat_interval_s: float
    max_concurrent_jobs: int
    hosts: list[ServedHost]
