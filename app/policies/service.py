"""Rules about protection policies."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.principal import Principal
from app.clock import Clock
from app.domain import schedule as sched
from app.errors import Conflict, InvalidInput, NotFound
from app.pagination import PageRequest
from app.policies.models import Policy
from app.policies.protection import recompute_protection
from app.policies.repository import PolicyRepository
from app.policies.schemas import (
    ApplicationProtection,
    BackupWindow,
    PolicyCreate,
    PolicyRead,
    PolicyUpdate,
    Retention,
    ScheduleSpec,
    VmSelection,
    WeeklyScheduleSpec,
    _check_schedule_in_window,
)
from app.tenants.repository import TenantRepository

_schedule_adapter: TypeAdapter[ScheduleSpec] = TypeAdapter(ScheduleSpec)


def schedule_of(policy: Policy) -> sched.Schedule:
    return _schedule(_schedule_adapter.validate_python(policy.schedule))


def _schedule(spec: ScheduleSpec) -> sched.Schedule:
    if isinstance(spec, WeeklyScheduleSpec):
        return sched.WeeklySchedule(
            times=tuple(sched.parse_hhmm(t) for t in spec.times), days=tuple(spec.days)
        )
    return sched.CronSchedule(spec.expression)


def next_run_at(policy: Policy, after: datetime) -> datetime | None:
    if not policy.enabled:
        return None
    return schedule_of(policy).next_after(after, sched.load_timezone(policy.timezone))


def latest_slot(policy: Policy, at: datetime) -> datetime | None:
    """The schedule's latest run time not later than ``at``."""
    return schedule_of(policy).latest_at_or_before(at, sched.load_timezone(policy.timezone))


def application_protection(policy: Policy) -> ApplicationProtection | None:
    return ApplicationProtection.model_validate(policy.applications) if policy.applications else None


def latest_app_slot(policy: Policy, at: datetime) -> datetime | None:
    """The application schedule's latest run time not later than ``at`` (None without one)."""
    apps = application_protection(policy)
    if apps is None:
        return None
    return _schedule(apps.schedule).latest_at_or_before(at, sched.load_timezone(policy.timezone))


class PolicyService:
    def __init__(self, session: AsyncSession, clock: Clock) -> None:
        self.session = session
        self.repo = PolicyRepository(session)
        self.tenants = TenantRepository(session)
        self.clock = clock

    async def get(self, principal: Principal, policy_id: uuid.UUID) -> Policy:
        policy = await self.repo.get(policy_id, principal.tenant_scope)
        if policy is None:
            raise NotFound(f"Policy {policy_id} does not exist.")
        return policy

    async def list_page(
        self,
        principal: Principal,
        page: PageRequest,
        tenant_id: uuid.UUID | None = None,
        enabled: bool | None = None,
        name_contains: str | None = None,
    ) -> tuple[list[Policy], int]:
        return await self.repo.list_page(principal.tenant_scope, page, tenant_id, enabled, name_contains)

    async def create(self, principal: Principal, data: PolicyCreate) -> Policy:
        principal.require_operator("create policies")
        if await self.tenants.get(data.tenant_id, None) is None:
            raise InvalidInput(f"Tenant {data.tenant_id} does not exist.", field=["body", "tenant_id"])
        await self._ensure_name_free(data.tenant_id, data.name)
        await self._ensure_vms_exist(data.tenant_id, data.selection, "selection")
        await self._ensure_vms_exist(data.tenant_id, data.exclusions, "exclusions")
        now = self.clock.now()
        policy = Policy(
            id=uuid.uuid4(),
            tenant_id=data.tenant_id,
            name=data.name,
            created_at=now,
            updated_at=now,
            **self._columns(data.model_dump(mode="json", exclude={"tenant_id", "name"})),
        )
        # The first scheduled backup is the next run, not one for a slot already past.
        policy.last_planned_slot = latest_slot(policy, now)
        policy.last_planned_app_slot = latest_app_slot(policy, now)
        await self.repo.add(policy)
        await recompute_protection(self.session, policy.tenant_id, self.clock.now())
        return policy

    async def update(self, principal: Principal, policy_id: uuid.UUID, data: PolicyUpdate) -> Policy:
        principal.require_operator("change policies")
        policy = await self.get(principal, policy_id)
        # The fields sent, each whole: a window sent as {"start": ...} is stored with its default
        # duration, as validated and as a read shows it, not as a half object the planner
        # cannot use.
        changes = data.model_dump(mode="json", include=data.model_fields_set)
        if changes.get("name") is None:
            changes.pop("name", None)
        for required in (
            "enabled",
            "timezone",
            "schedule",
            "window",
            "rpo_hours",
            "rto_hours",
            "retention",
            "offsite_copy",
            "application_aware",
            "retry_count",
            "selection",
            "exclusions",
        ):
            if required in changes and changes[required] is None:
                raise InvalidInput(
                    f"'{required}' cannot be null; omit it to keep the current value.",
                    field=["body", required],
                )
        if "name" in changes and changes["name"] != policy.name:
            await self._ensure_name_free(policy.tenant_id, changes["name"])
        if data.selection is not None:
            await self._ensure_vms_exist(policy.tenant_id, data.selection, "selection")
        if data.exclusions is not None:
            await self._ensure_vms_exist(policy.tenant_id, data.exclusions, "exclusions")
        schedule = data.schedule or _schedule_adapter.validate_python(policy.schedule)
        window = data.window or BackupWindow.model_validate(policy.backup_window)
        try:
            _check_schedule_in_window(schedule, window)
        except ValueError as exc:
            raise InvalidInput(str(exc), field=["body", "schedule"]) from exc
        rpo_changed = "rpo_hours" in changes and changes["rpo_hours"] != policy.rpo_hours
        for column, value in self._columns(changes).items():
            setattr(policy, column, value)
        policy.updated_at = self.clock.now()
        if rpo_changed:
            policy.rpo_changed_at = policy.updated_at
        if "schedule" in changes or "timezone" in changes or changes.get("enabled") is True:
            policy.last_planned_slot = latest_slot(policy, policy.updated_at)
        if "applications" in changes or "timezone" in changes or changes.get("enabled") is True:
            policy.last_planned_app_slot = latest_app_slot(policy, policy.updated_at)
        await self.session.flush()
        await recompute_protection(self.session, policy.tenant_id, self.clock.now())
        return policy

    async def delete(self, principal: Principal, policy_id: uuid.UUID) -> None:
        principal.require_operator("delete policies")
        policy = await self.get(principal, policy_id)
        tenant_id = policy.tenant_id
        await self.repo.delete(policy)
        await recompute_protection(self.session, tenant_id, self.clock.now())

    async def to_read(self, policies: list[Policy]) -> list[PolicyRead]:
        counts = await self.repo.vm_counts([p.id for p in policies])
        conflicts: dict[str, int] = {}
        for tenant_id in {p.tenant_id for p in policies}:
            for ids in await self.repo.conflict_vms(tenant_id):
                for pid in ids:
                    conflicts[pid] = conflicts.get(pid, 0) + 1
        now = self.clock.now()
        return [
            PolicyRead(
                id=p.id,
                tenant_id=p.tenant_id,
                name=p.name,
                description=p.description,
                enabled=p.enabled,
                timezone=p.timezone,
                schedule=_schedule_adapter.validate_python(p.schedule),
                window=BackupWindow.model_validate(p.backup_window),
                rpo_hours=p.rpo_hours,
                rto_hours=p.rto_hours,
                retention=Retention.model_validate(p.retention),
                offsite_copy=p.offsite_copy,
                offsite_retention=Retention.model_validate(p.offsite_retention)
                if p.offsite_retention
                else None,
                application_aware=p.application_aware,
                retry_count=p.retry_count,
                selection=VmSelection.model_validate(p.selection),
                exclusions=VmSelection.model_validate(p.exclusions),
                applications=ApplicationProtection.model_validate(p.applications) if p.applications else None,
                protected_vm_count=counts.get(p.id, 0),
                conflict_vm_count=conflicts.get(str(p.id), 0),
                next_run_at=next_run_at(p, now),
                created_at=p.created_at,
                updated_at=p.updated_at,
            )
            for p in policies
        ]

    @staticmethod
    def _columns(fields: dict[str, Any]) -> dict[str, Any]:
        """Map schema field names to column names (``window`` is a reserved word in SQL)."""
        out = dict(fields)
        if "window" in out:
            out["backup_window"] = out.pop("window")
        return out

    async def _ensure_name_free(self, tenant_id: uuid.UUID, name: str) -> None:
        if await self.repo.get_by_name(tenant_id, name) is not None:
            raise Conflict(f"The tenant already has a policy named '{name}'; choose another name.")

    async def _ensure_vms_exist(self, tenant_id: uuid.UUID, selection: VmSelection, part: str) -> None:
        found = await self.repo.existing_vm_ids(tenant_id, selection.vm_ids)
        for index, vm_id in enumerate(selection.vm_ids):
            if vm_id not in found:
                raise InvalidInput(
                    f"VM {vm_id} does not exist in this tenant's inventory; sync the vCenter or fix the id.",
                    field=["body", part, "vm_ids", index],
                )
