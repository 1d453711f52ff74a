from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from app.schemas import OutputModel


class AlertKind(StrEnum):
    BACKUP_FAILED = "backup_failed"  # the VM's latest backup failed, was skipped or missed
    RPO_BREACH = "rpo_breach"  # the VM's latest restore point is older than its RPO
    PROXY_OFFLINE = "proxy_offline"  # a registered proxy stopped sending heartbeats
    DATASTORE_LOW = "datastore_low"  # below 15% free (warning), 10% (critical: backups skipped)
    SNAPSHOT_LEFT = "snapshot_left"  # a backup snapshot could not be removed from the VM
    VERIFY_DAMAGE = "verify_damage"  # the last repository verify found damaged or missing data


class Severity(StrEnum):
    WARNING = "warning"
    CRITICAL = "critical"


class AlertState(StrEnum):
    OPEN = "open"
    CLOSED = "closed"
    ALL = "all"


@dataclass(frozen=True)
class Condition:
    """An alert that should be open now, as one evaluation found it."""

    key: str
    kind: AlertKind
    severity: Severity
    message: str
    tenant_id: uuid.UUID | None = None
    subject_type: str | None = None
    subject_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class AlertRead(OutputModel):
    id: uuid.UUID
    key: str = Field(
        description="The condition, e.g. 'backup_failed:<vm id>': at most one open alert per key."
    )
    kind: str = Field(
        description="backup_failed, rpo_breach, proxy_offline, datastore_low, snapshot_left or verify_damage"
    )
    severity: str = Field(description="warning or critical (a datastore's alert follows its free space)")
    tenant_id: uuid.UUID | None = Field(description="The tenant concerned; null for the service's own parts.")
    subject_type: str | None = Field(description="vm, proxy, datastore or repository")
    subject_id: str | None
    message: str
    detail: dict[str, Any]
    opened_at: datetime
    closed_at: datetime | None = Field(description="When the condition cleared; null while open.")
