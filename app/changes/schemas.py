from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from app.policies.schemas import PolicyFields, PolicyUpdate
from app.schemas import InputModel, OutputModel

Comment = Annotated[
    str | None, Field(default=None, max_length=2000, description="Why; shown to the operator.")
]


class PolicyUpdateRequest(InputModel):
    """Change fields of one of the tenant's policies (only the fields sent)."""

    kind: Literal["policy_update"]
    policy_id: uuid.UUID
    changes: PolicyUpdate
    comment: Comment = None


class NewPolicy(PolicyFields):
    name: str = Field(min_length=1, max_length=200)


class PolicyCreateRequest(InputModel):
    """A new policy for the tenant."""

    kind: Literal["policy_create"]
    policy: NewPolicy
    comment: Comment = None


class ProtectionRequest(InputModel):
    """Protect VMs with a policy (``protect``) or stop protecting them (``unprotect``)."""

    kind: Literal["protect", "unprotect"]
    policy_id: uuid.UUID
    vm_ids: list[uuid.UUID] = Field(min_length=1, max_length=1000)
    comment: Comment = None


ChangeRequestCreate = Annotated[
    PolicyUpdateRequest | PolicyCreateRequest | ProtectionRequest, Field(discriminator="kind")
]


class ChangeRequestDecision(InputModel):
    reason: str | None = Field(
        default=None, max_length=2000, description="Required to reject; a note to approve."
    )


class ChangeRequestRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    kind: str
    policy_id: uuid.UUID | None
    payload: dict[str, Any]
    comment: str | None
    state: str = Field(description="pending, approved, rejected or cancelled")
    requested_by_key_id: uuid.UUID | None
    created_at: datetime
    decided_by_key_id: uuid.UUID | None
    decided_at: datetime | None
    reason: str | None
    result: dict[str, Any]
