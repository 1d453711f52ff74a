from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from app.schemas import InputModel, OutputModel


class JobCreate(InputModel):
    """Back up these VMs now, outside their schedule."""

    vm_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
    kind: Literal["backup", "app_backup"] = Field(
        default="backup",
        description="backup: image of the whole VM; app_backup: its databases and file sets, through its "
        "guest agent, as its policy's applications say.",
    )


class JobProgress(OutputModel):
    phase: str | None
    bytes_total: int = Field(description="Bytes the job covers (the VM's disks)")
    bytes_read: int = Field(
        description="Disk bytes processed so far (read, or unchanged since the last point)"
    )
    bytes_new: int = Field(description="New data after deduplication, before compression")
    bytes_stored: int = Field(description="Bytes written to the repository (compressed, encrypted)")
    percent: float | None
    throughput_bytes_per_s: float | None
    eta_s: float | None


class JobRead(OutputModel):
    id: uuid.UUID
    kind: str
    state: str
    trigger: str
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    policy_id: uuid.UUID | None
    restore_id: uuid.UUID | None
    proxy_id: uuid.UUID | None
    attempt: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: JobProgress
    warnings: list[str]
    error: str | None
    error_kind: str | None
    result: dict[str, Any] = Field(default_factory=dict)
    waiting_reason: str | None = Field(
        default=None, description="Queued jobs: why no agent has taken it yet (no proxy for its host...)."
    )
