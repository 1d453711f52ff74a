from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from app.jobs.schemas import JobProgress
from app.schemas import InputModel, OutputModel


class NewVmTarget(InputModel):
    name: str = Field(min_length=1, max_length=80, description="Name of the VM to create.")
    host_id: uuid.UUID = Field(description="Host to register it on (from GET /hosts).")
    datastore_id: uuid.UUID = Field(description="Datastore for its files (from GET /datastores).")


class RestoreCreate(InputModel):
    restore_point_id: uuid.UUID
    type: Literal["vm"] = "vm"
    target: Literal["original", "new"]
    new_vm: NewVmTarget | None = Field(default=None, description="Required when target is 'new'.")
    force: bool = Field(
        default=False, description="Restore to the original VM even if it is powered on (it is powered off)."
    )
    power_on: bool = Field(default=False, description="Power the VM on after the restore.")

    @model_validator(mode="after")
    def _target_fields(self) -> RestoreCreate:
        if self.target == "new" and self.new_vm is None:
            raise ValueError("target 'new' needs new_vm (name, host_id, datastore_id)")
        if self.target == "original" and self.new_vm is not None:
            raise ValueError("new_vm is only for target 'new'")
        return self


class RestoreRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    restore_point_id: uuid.UUID | None = Field(description="Null once retention pruned the point")
    restore_point_created_at: datetime | None
    type: str
    target: str
    target_params: dict[str, Any]
    state: str = Field(description="requested, running, succeeded, failed or cancelled")
    source_location: str = Field(description="onsite or offsite: where the data is read from")
    requested_at: datetime
    initiated_at: datetime | None = Field(description="When a proxy started work on it")
    completed_at: datetime | None
    job_id: uuid.UUID | None
    progress: JobProgress | None
    error: str | None
    result: dict[str, Any]
