from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from app.domain import schedule as sched
from app.domain.schedule import WEEKDAYS
from app.schemas import InputModel, OutputModel

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _valid_hhmm(value: str) -> str:
    sched.parse_hhmm(value)
    return value


HHMM = Annotated[str, Field(pattern=r"^\d{2}:\d{2}$", examples=["22:00"]), AfterValidator(_valid_hhmm)]


class WeeklyScheduleSpec(InputModel):
    """Run at these wall-clock times on these days, in the policy's timezone."""

    type: Literal["weekly"] = "weekly"
    times: list[HHMM] = Field(min_length=1, max_length=24)
    days: list[Weekday] = Field(default_factory=lambda: list(ALL_DAYS), min_length=1)

    @field_validator("times")
    @classmethod
    def _times_sorted(cls, value: list[str]) -> list[str]:
        return sorted(set(value))

    @field_validator("days")
    @classmethod
    def _days_unique(cls, value: list[str]) -> list[str]:
        return [d for d in WEEKDAYS if d in value]


class CronScheduleSpec(InputModel):
    """Run when a standard five-field cron expression fires, in the policy's timezone."""

    type: Literal["cron"]
    expression: str = Field(min_length=1, max_length=200, examples=["0 22 * * 1-5"])

    @field_validator("expression")
    @classmethod
    def _cron_valid(cls, value: str) -> str:
        sched.validate_cron(value)
        return value


ScheduleSpec = Annotated[WeeklyScheduleSpec | CronScheduleSpec, Field(discriminator="type")]


class BackupWindow(InputModel):
    """When backups may start: jobs not started by the end of the window are missed."""

    start: HHMM = "22:00"
    duration_minutes: int = Field(default=480, ge=15, le=1440)


class Retention(InputModel):
    """Restore points kept per VM, grandfather-father-son."""

    daily: int = Field(default=7, ge=0, le=3650)
    weekly: int = Field(default=4, ge=0, le=520)
    monthly: int = Field(default=6, ge=0, le=240)

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if self.daily + self.weekly + self.monthly == 0:
            raise ValueError("retention must keep at least one restore point")
        return self


TagSelector = Annotated[str, Field(min_length=1, max_length=400, examples=["backup:gold", "gold"])]
FolderPrefix = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^/", examples=["/DC0/vm/Prod"])]


class VmSelection(InputModel):
    vm_ids: list[uuid.UUID] = Field(default_factory=list, max_length=10000)
    folders: list[FolderPrefix] = Field(default_factory=list, max_length=500)
    tags: list[TagSelector] = Field(default_factory=list, max_length=500)


def _check_schedule_in_window(schedule: ScheduleSpec | None, window: BackupWindow | None) -> None:
    if isinstance(schedule, WeeklyScheduleSpec) and window is not None:
        outside = sched.times_outside_window(
            [sched.parse_hhmm(t) for t in schedule.times],
            sched.parse_hhmm(window.start),
            window.duration_minutes,
        )
        if outside:
            listed = ", ".join(t.strftime("%H:%M") for t in outside)
            raise ValueError(
                f"schedule time(s) {listed} fall outside the backup window starting "
                f"{window.start} for {window.duration_minutes} minutes"
            )


DatabaseName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00/\\]+$")]
GuestPath = Annotated[str, Field(min_length=1, max_length=4096, pattern=r"^/", examples=["/etc", "/srv/www"])]


class DatabaseItem(InputModel):
    """Databases of one engine instance in the VM. The guest agent's own configuration says how to
    reach ``instance`` (host, port, user, password file): credentials never leave the VM."""

    type: Literal["postgresql", "mysql"]
    instance: str = Field(default="default", min_length=1, max_length=100)
    databases: list[DatabaseName] = Field(
        default_factory=list, max_length=1000, description="Names to back up; empty means every database."
    )


class FileSetItem(InputModel):
    """Files and directories in the VM, archived as they are at backup time."""

    type: Literal["files"]
    paths: list[GuestPath] = Field(min_length=1, max_length=1000)
    exclude: list[str] = Field(
        default_factory=list, max_length=1000, description="Glob patterns of paths to leave out."
    )


ApplicationItem = Annotated[DatabaseItem | FileSetItem, Field(discriminator="type")]


class ApplicationProtection(InputModel):
    """Application backups through the VM's guest agent, with their own schedule and retention.

    Their restore points count for the VM's RPO like image ones.
    """

    schedule: ScheduleSpec = Field(default_factory=lambda: WeeklyScheduleSpec(times=["01:00"]))
    window: BackupWindow = Field(default_factory=lambda: BackupWindow(start="00:00", duration_minutes=360))
    retention: Retention = Field(default_factory=lambda: Retention(daily=14, weekly=4, monthly=3))
    items: list[ApplicationItem] = Field(min_length=1, max_length=100)

    @model_validator(mode="after")
    def _schedule_in_window(self) -> ApplicationProtection:
        _check_schedule_in_window(self.schedule, self.window)
        return self


class PolicyFields(InputModel):
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool = True
    timezone: str = Field(default="UTC", max_length=64, examples=["Europe/Berlin"])
    schedule: ScheduleSpec = Field(default_factory=lambda: WeeklyScheduleSpec(times=["22:00"]))
    window: BackupWindow = Field(default_factory=BackupWindow)
    rpo_hours: int = Field(default=24, ge=1, le=24 * 366)
    rto_hours: int = Field(default=12, ge=1, le=24 * 366)
    retention: Retention = Field(default_factory=Retention)
    offsite_copy: bool = Field(
        default=False, description="Copy each new restore point to the offsite repository once it is taken."
    )
    offsite_retention: Retention | None = Field(
        default=None, description="Restore points kept offsite (usually more); null: as many as onsite."
    )
    application_aware: bool = Field(
        default=False,
        description="Quiesced snapshots; with a guest agent in the VM, its freeze/thaw hooks run around the "
        "snapshot so the image is application-consistent.",
    )
    retry_count: int = Field(default=3, ge=0, le=20)
    selection: VmSelection = Field(default_factory=VmSelection)
    exclusions: VmSelection = Field(default_factory=VmSelection)
    applications: ApplicationProtection | None = Field(
        default=None, description="Database and file-set backups through the guest agent; null for none."
    )

    @field_validator("timezone")
    @classmethod
    def _tz_valid(cls, value: str) -> str:
        sched.load_timezone(value)
        return value

    @model_validator(mode="after")
    def _schedule_in_window(self) -> PolicyFields:
        """Checked for every whole policy: one created directly and one asked for in a change
        request, which is otherwise found invalid only when an operator approves it."""
        _check_schedule_in_window(self.schedule, self.window)
        return self


class PolicyCreate(PolicyFields):
    tenant_id: uuid.UUID
    name: str = Field(min_length=1, max_length=200)


class PolicyUpdate(InputModel):
    """Only the fields sent are changed."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    enabled: bool | None = None
    timezone: str | None = Field(default=None, max_length=64)
    schedule: ScheduleSpec | None = None
    window: BackupWindow | None = None
    rpo_hours: int | None = Field(default=None, ge=1, le=24 * 366)
    rto_hours: int | None = Field(default=None, ge=1, le=24 * 366)
    retention: Retention | None = None
    offsite_copy: bool | None = None
    offsite_retention: Retention | None = Field(default=None, description="Send null for the onsite counts.")
    application_aware: bool | None = None
    retry_count: int | None = Field(default=None, ge=0, le=20)
    selection: VmSelection | None = None
    exclusions: VmSelection | None = None
    applications: ApplicationProtection | None = Field(default=None, description="Send null to stop them.")

    @field_validator("timezone")
    @classmethod
    def _tz_valid(cls, value: str | None) -> str | None:
        if value is not None:
            sched.load_timezone(value)
        return value


class PolicyRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    name: str
    description: str | None
    enabled: bool
    timezone: str
    schedule: WeeklyScheduleSpec | CronScheduleSpec
    window: BackupWindow
    rpo_hours: int
    rto_hours: int
    retention: Retention
    offsite_copy: bool
    offsite_retention: Retention | None = None
    application_aware: bool
    retry_count: int
    selection: VmSelection
    exclusions: VmSelection
    applications: ApplicationProtection | None = None
    protected_vm_count: int = 0
    conflict_vm_count: int = 0
    next_run_at: datetime | None = None
    created_at: datetime
    updated_at: datetime
