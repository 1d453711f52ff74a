from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field, model_validator

from app.auth.principal import Role
from app.schemas import InputModel, OutputModel


class ApiKeyCreate(InputModel):
    name: str = Field(min_length=1, max_length=200, description="What the key is for, e.g. 'portal'.")
    role: Role
    tenant_id: uuid.UUID | None = Field(
        default=None, description="Required for customer keys; must be empty for operator keys."
    )

    @model_validator(mode="after")
    def _tenant_matches_role(self) -> ApiKeyCreate:
        if self.role is Role.CUSTOMER and self.tenant_id is None:
            raise ValueError("a customer key needs tenant_id")
        if self.role is Role.OPERATOR and self.tenant_id is not None:
            raise ValueError("an operator key sees all tenants; leave tenant_id empty")
        return self


class ApiKeyRead(OutputModel):
    id: uuid.UUID
    name: str
    role: Role
    tenant_id: uuid.UUID | None
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The secret. It is shown only in this response; store it now.")
