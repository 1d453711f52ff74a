from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import Field

from app.schemas import OutputModel


class Outcome(StrEnum):
    SUCCESS = "success"  # 1xx-3xx
    DENIED = "denied"  # 401, 403: who the caller is, or what their role may do
    INVALID = "invalid"  # other 4xx: not found, conflicts, validation
    FAILED = "failed"  # 5xx: the service failed


class Actor(StrEnum):
    OPERATOR = "operator"
    CUSTOMER = "customer"
    AGENT = "agent"  # a proxy or a guest agent, on the agent channel
    INTEGRATION = "integration"  # a signed webhook from a ticketing system
    ANONYMOUS = "anonymous"  # no credential, or one that did not authenticate


def outcome_of(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    if status in (401, 403):
        return Outcome.DENIED
    if status < 500:
        return Outcome.INVALID
    return Outcome.FAILED


@dataclass
class AuditEntry:
    """What the middleware saw of one request, before it becomes a row."""

    at: datetime
    request_id: str
    actor: Actor
    action: str
    status: int
    key_id: uuid.UUID | None = None
    key_lookup_id: str | None = None
    #: The prefix of the bearer credential ('vmr', 'vmrp', 'vmrg'): which table a failed
    #: credential's lookup id is looked up in.
    credential_prefix: str | None = None
    tenant_id: uuid.UUID | None = None
    object_type: str | None = None
    object_id: str | None = None
    source_address: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    tenant_id: uuid.UUID | None = None
    key_id: uuid.UUID | None = None
    key_lookup_id: str | None = None
    actor: str | None = None
    action: str | None = None
    object_id: str | None = None
    outcome: str | None = None


class AuditEventRead(OutputModel):
    id: uuid.UUID
    at: datetime
    request_id: str = Field(description="The request's X-Request-ID (the caller's, if well-formed).")
    actor: str = Field(description="operator, customer, agent, integration or anonymous")
    key_id: uuid.UUID | None = Field(
        description="The API key (or agent) that made the request; for a failed credential, the key "
        "its public lookup part names, if any."
    )
    key_lookup_id: str | None = Field(
        description="The public part of the credential sent (never the secret)."
    )
    tenant_id: uuid.UUID | None = Field(description="The tenant of the key (null for operators and proxies).")
    action: str = Field(description="Method and route, e.g. 'POST /api/v1/restores/{restore_id}/approve'.")
    object_type: str | None
    object_id: str | None = Field(
        description="The object acted on: from the path, or the id the response created. Customers see "
        "it only for requests that succeeded (a refused request may name another tenant's object)."
    )
    outcome: str = Field(description="success, denied (401/403), invalid (other 4xx) or failed (5xx)")
    status: int
    source_address: str | None
    detail: dict[str, Any] = Field(
        description="reason: the error's detail for refused requests; object_ids: every id a create or "
        "a claim returned."
    )
