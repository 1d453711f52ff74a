"""Recompute every VM's protection status of a tenant after policies or inventory change.

The status is stored on the VM row (rather than computed per request) so that lists can be
filtered by it ("show me unprotected VMs") and so that it is one consistent answer for the API,
the planner and the reports.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.protection import PolicyRule, Selector, VmFacts, resolve
from app.inventory.models import VirtualMachine
from app.policies.models import Policy
from app.policies.repository import PolicyRepository


def _selector(spec: dict[str, Any]) -> Selector:
    return Selector(
        vm_ids=frozenset(str(v) for v in spec.get("vm_ids", [])),
        folders=tuple(spec.get("folders", [])),
        tags=frozenset(spec.get("tags", [])),
    )


def policy_rule(policy: Policy) -> PolicyRule:
    return PolicyRule(
        policy_id=str(policy.id),
        name=policy.name,
        enabled=policy.enabled,
        selection=_selector(policy.selection),
        exclusions=_selector(policy.exclusions),
    )


async def recompute_protection(
    session: AsyncSession, tenant_id: uuid.UUID, now: datetime | None = None
) -> int:
    """Apply the protection rules to every VM of the tenant; returns how many changed. ``now``
    stamps the VMs whose protection began or moved to another policy."""
    rules = [policy_rule(p) for p in await PolicyRepository(session).for_tenant(tenant_id)]
    vms = (
        await session.execute(select(VirtualMachine).where(VirtualMachine.tenant_id == tenant_id))
    ).scalars()
    changed = 0
    for vm in vms:
        result = resolve(
            VmFacts(
                vm_id=str(vm.id),
                folder_path=vm.folder_path,
                tags=frozenset(vm.tags or ()),
                gone=vm.gone_at is not None,
            ),
            rules,
        )
        policy_id = uuid.UUID(result.policy_id) if result.policy_id else None
        conflicting = list(result.conflicting_policy_ids)
        if (
            vm.protection_status != result.status.value
            or vm.protection_policy_id != policy_id
            or vm.protection_reason != result.reason
            or list(vm.conflicting_policy_ids or []) != conflicting
        ):
            if now is not None and (
                vm.protection_status != result.status.value or vm.protection_policy_id != policy_id
            ):
                vm.protection_changed_at = now
            vm.protection_status = result.status.value
            vm.protection_policy_id = policy_id
            vm.protection_reason = result.reason
            vm.conflicting_policy_ids = conflicting
            changed += 1
    await session.flush()
    return changed
