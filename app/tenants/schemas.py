from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import Field

from app.schemas import InputModel, OutputModel

TenantName = Field(min_length=1, max_length=200, description="Unique display name of the customer.")


class TenantCreate(InputModel):
    name: str = TenantName


class TenantUpdate(InputModel):
    name: str = TenantName


class TenantRead(OutputModel):
    id: uuid.UUID
    name: str
    created_at: datetime
    updated_at: datetime
