from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from app.jobs.schemas import JobProgress
from app.schemas import InputModel, OutputModel


class NewVmTarget(InputModel):
    name: str = Field(min_length=1, max_length=80, description="Name of the VM to create.")
    host_id: uuid.UUID = Field(description="Host to register it on (from GET /hosts).")
    datastore_id: uuid.UUID = Field(description="Datastore for its files (from GET /datastores).")


class VmRestoreCreate(InputModel):
    """The whole VM, over the original or as a new VM."""

    restore_point_id: uuid.UUID
    type: Literal["vm"] = "vm"
    target: Literal["original", "new"]
    new_vm: NewVmTarget | None = Field(default=None, description="Required when target is 'new'.")
    force: bool = Field(
        default=False, description="Restore to the original VM even if it is powered on (it is powered off)."
    )
    power_on: bool = Field(default=False, description="Power the VM on after the restore.")

    @model_validator(mode="after")
    def _target_fields(self) -> VmRestoreCreate:
        if self.target == "new" and self.new_vm is None:
            raise ValueError("target 'new' needs new_vm (name, host_id, datastore_id)")
        if self.target == "original" and self.new_vm is not None:
            raise ValueError("new_vm is only for target 'new'")
        return self


class FileRef(InputModel):
    disk: int = Field(description="Disk key, as in the restore point's disks.")
    volume: str = Field(
        min_length=1, max_length=300, description="Volume id from GET /restore-points/{id}/volumes."
    )
    path: str = Field(min_length=1, max_length=4096, description="Absolute path of a file or directory.")


class GuestCredentials(InputModel):
    """A guest OS account that may write the files (used once, through VMware Tools; never stored in
    clear and erased when the restore ends)."""

    username: str = Field(min_length=1, max_length=256)
    password: str = Field(min_length=1, max_length=1024, repr=False)
    target_directory: str | None = Field(
        default=None, max_length=4096, pattern=r"^/", description="Put the files here; null: where they were."
    )
    overwrite: bool = Field(default=False, description="Replace files that exist in the VM.")


class FileRestoreCreate(InputModel):
    """Files and directories out of an image restore point: an archive to download, or pushed back
    into the running VM through vCenter guest operations when ``guest`` credentials are given."""

    restore_point_id: uuid.UUID
    type: Literal["files"]
    files: list[FileRef] = Field(min_length=1, max_length=1000)
    format: Literal["tar", "zip"] = Field(default="tar", description="Archive format (no guest credentials).")
    guest: GuestCredentials | None = None


class ApplicationRestoreCreate(InputModel):
    """A database or a file set of an application restore point, through the VM's guest agent."""

    restore_point_id: uuid.UUID
    type: Literal["application"]
    stream: str = Field(min_length=1, max_length=255, description="Name from the restore point's streams.")
    target_database: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        pattern=r"^[A-Za-z0-9_$-]+$",
        description="Databases: restore under this name (default: its own name).",
    )
    overwrite: bool = Field(
        default=False,
        description="Databases: with a target_database that names another existing database, replace it. "
        "Restoring under the database's own name always replaces it (that is rolling it back).",
    )
    target_directory: str | None = Field(
        default=None, max_length=4096, pattern=r"^/", description="File sets: extract here (required)."
    )
    paths: list[str] = Field(
        default_factory=list, max_length=1000, description="File sets: only these paths (default: all)."
    )


def _restore_type(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("type", "vm"))
    return str(getattr(value, "type", "vm"))


RestoreCreate = Annotated[
    Annotated[VmRestoreCreate, Tag("vm")]
    | Annotated[FileRestoreCreate, Tag("files")]
    | Annotated[ApplicationRestoreCreate, Tag("application")],
    Discriminator(_restore_type),
]


class RestoreRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    restore_point_id: uuid.UUID | None = Field(description="Null once retention pruned the point")
    restore_point_created_at: datetime | None
    type: str = Field(description="vm, files or application")
    target: str = Field(description="vm: original or new; files: archive or guest; application: original")
    target_params: dict[str, Any]
    state: str = Field(
        description="awaiting_approval (over an existing VM, until an operator approves), requested, "
        "running, succeeded, failed or cancelled"
    )
    approval_required: bool = False
    decided_at: datetime | None = Field(default=None, description="When an operator approved or rejected it")
    source_location: str = Field(description="onsite or offsite: where the data is read from")
    requested_at: datetime
    initiated_at: datetime | None = Field(description="When a proxy started work on it")
    completed_at: datetime | None
    job_id: uuid.UUID | None
    progress: JobProgress | None
    error: str | None
    result: dict[str, Any]
    download_url: str | None = Field(
        default=None,
        description="File restores delivered as an archive: where to download it once succeeded.",
    )
    integration_id: uuid.UUID | None = Field(
        default=None, description="The ticketing integration that asked for it, if one did."
    )
    ticket_id: str | None = Field(default=None, description="The ticket it was asked for in, if any.")
