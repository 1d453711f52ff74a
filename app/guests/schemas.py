from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import Field

from app.schemas import InputModel, OutputModel


class GuestAgentCreate(InputModel):
    vm_id: uuid.UUID = Field(description="The VM the agent runs in (from GET /vms). One agent per VM.")


class GuestAgentRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    vm_name: str
    status: str = Field(description="online, stale (missed heartbeats) or offline")
    applications: list[dict[str, Any]] = Field(
        description="What the agent found in the VM at its last heartbeat: engines, instances, databases."
    )
    last_heartbeat_at: datetime | None
    agent_version: str | None
    agent_hostname: str | None
    created_at: datetime
    updated_at: datetime


class GuestAgentCreated(GuestAgentRead):
    token: str = Field(
        description="The agent's token (starts with 'vmrg_'). Shown only in this response; store it now."
    )
