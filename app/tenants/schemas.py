from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from app.schemas import InputModel, OutputModel

TenantName = Field(min_length=1, max_length=200, description="Unique display name of the customer.")


ApprovalSetting = Field(
    description="Restores that overwrite an existing VM wait for an operator's approval (POST "
    "/restores/{id}/approve); false waives it for this tenant. Restores to a new VM never wait."
)


class TenantCreate(InputModel):
    name: str = TenantName
    restore_approval_required: bool = Field(default=True, description=ApprovalSetting.description)


class TenantUpdate(InputModel):
    """Only the fields sent are changed."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    restore_approval_required: bool | None = Field(default=None, description=ApprovalSetting.description)


class TenantRead(OutputModel):
    id: uuid.UUID
    name: str
    restore_approval_required: bool
    created_at: datetime
    updated_at: datetime
