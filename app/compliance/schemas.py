from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from app.schemas import OutputModel


class Period(BaseModel):
    from_: datetime = Field(alias="from", serialization_alias="from")
    to: datetime = Field(description="End of the period (later than now counts up to now).")

    model_config = {"populate_by_name": True}


class BreachRead(OutputModel):
    id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    vm_name: str | None = None
    policy_id: uuid.UUID | None
    rpo_hours: int = Field(description="The policy's RPO when the breach began.")
    started_at: datetime = Field(description="When the latest restore point became older than the RPO.")
    ended_at: datetime | None = Field(description="When compliance was restored; null while open.")
    duration_s: float = Field(description="Seconds so far (open breaches count up to now).")
    cause: str = Field(
        description="Latest cause: failed_jobs, missed_window, no_proxy, datastore_space, "
        "not_yet_backed_up or other"
    )
    causes: list[str] = Field(description="Every cause seen while the breach was open, in order.")
    detail: str | None
    resolution: str | None = Field(
        description="Why it ended: backed_up, unprotected, policy_changed or rpo_changed"
    )


class DatastoreSpaceRead(OutputModel):
    id: uuid.UUID
    name: str
    free_percent: float
    space_status: str = Field(description="warning below 15% free, critical below 10%")


class OpenBreachRef(BaseModel):
    started_at: datetime
    cause: str


class OffsiteRpo(BaseModel):
    """The RPO as met by the offsite copies alone: what survives losing the onsite repository."""

    latest_copied_point_at: datetime | None = Field(
        description="When the newest restore point that has a complete offsite copy was taken"
    )
    age_hours: float | None
    status: str = Field(description="compliant, at_risk, breached (against the policy's RPO) or not_copied")


class RpoRow(BaseModel):
    """One VM (``group_by=vm``), policy or tenant of the RPO report.

    Counts are of VMs in the group; time figures are summed over them, so a group's
    ``compliant_percent`` is weighted by each VM's protected time.
    """

    tenant_id: uuid.UUID | None
    tenant_name: str | None
    policy_id: uuid.UUID | None
    policy_name: str | None
    vm_id: uuid.UUID | None = None
    vm_name: str | None = None
    rpo_hours: int | None = Field(description="The policy's RPO (VM and policy rows).")
    status: str | None = Field(
        default=None, description="VM rows: compliant, at_risk, breached or unprotected (now)."
    )
    protected_since: datetime | None = None
    latest_restore_point_at: datetime | None = Field(
        default=None, description="The VM's latest image restore point (application points do not count)."
    )
    age_hours: float | None = Field(default=None, description="Age of the latest image restore point now.")
    due_at: datetime | None = Field(
        default=None, description="When the VM breaches its RPO unless a newer restore point appears."
    )
    open_breach: OpenBreachRef | None = None
    offsite: OffsiteRpo | None = Field(
        default=None, description="VM rows of policies with offsite copies: the RPO of the offsite copies."
    )
    vm_count: int
    compliant: int
    at_risk: int = Field(description="VMs whose RPO clock is above 80% of the RPO.")
    breached: int
    unprotected: int = Field(description="VMs not protected now that were protected during the period.")
    protected_s: float = Field(description="Seconds of the period the VMs were protected.")
    breached_s: float = Field(description="Seconds of the period the VMs were in breach.")
    compliant_percent: float | None = Field(
        description="Share of the protected time within the RPO; null without protected time."
    )
    breaches_in_period: int
    open_breaches: int
    below_space_requirement: int = Field(description="VMs with a datastore below 15% free.")
    datastores_below_requirement: list[DatastoreSpaceRead] = Field(
        default_factory=list, description="VM rows: the VM's datastores below 15% free."
    )
    breaches: list[BreachRead] = Field(default_factory=list, description="VM rows: breaches in the period.")


class RpoReport(BaseModel):
    period: Period
    group_by: str
    items: list[RpoRow]
    total: int
    limit: int
    offset: int


class ClockRead(BaseModel):
    deadline_at: datetime
    status: str = Field(description="on_track, at_risk, breached, met, failed or cancelled")
    at_risk_at: datetime | None = Field(description="When 80% of the window had elapsed, if it had.")
    breached_at: datetime | None = Field(description="The deadline, if it was passed.")


class RestoreSlaRead(BaseModel):
    restore_id: uuid.UUID
    tenant_id: uuid.UUID
    vm_id: uuid.UUID
    vm_name: str
    restore_point_id: uuid.UUID | None = Field(description="Null once the point was pruned.")
    policy_id: uuid.UUID | None
    state: str
    source_location: str
    requested_at: datetime
    initiated_at: datetime | None
    completed_at: datetime | None
    initiation_window_hours: float = Field(description="2 h for onsite data, 6 h for offsite.")
    rto_hours: int = Field(description="The restore point's policy's RTO, 12 h without one.")
    initiation: ClockRead
    completion: ClockRead
    recorded_at: datetime | None = Field(
        description="When the SLA recorder last recorded a change of these clocks."
    )


class ClockCounts(BaseModel):
    on_track: int = 0
    at_risk: int = 0
    breached: int = 0
    met: int = 0
    failed: int = 0
    cancelled: int = 0


class RestoreSlaSummary(BaseModel):
    restores: int = Field(description="Restores requested in the period.")
    initiation: ClockCounts
    completion: ClockCounts
    active_at_risk: int = Field(description="Restores not yet ended with a clock at risk.")
    active_breached: int = Field(description="Restores not yet ended with a clock breached.")


class ComplianceSummary(BaseModel):
    period: Period
    generated_at: datetime
    rpo: RpoRow
    open_breaches_by_cause: dict[str, int]
    restores: RestoreSlaSummary
