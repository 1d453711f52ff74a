"""Retention rules applied to the catalog: which of a VM's restore points go, and removing rows.

Which policy's retention applies: the policy protecting the VM now; for a VM no policy protects
any more (excluded, in conflict, gone from vCenter) the policy that made its latest restore
point, if it still exists; else none, and nothing of the VM is pruned. The GFS selection itself
is :func:`app.domain.retention.select_keep` (Proxmox Backup Server's prune semantics), in the
policy's timezone.

Points that restores refer to: a requested or running restore makes its point *in use* (kept,
counting for no rule). A finished restore does not hold its point: when the point is pruned the
restore's record keeps the point's time, and its reference becomes null.

This service only reads and flushes; :class:`app.retention.pruner.Pruner` owns the transaction
and the repository side.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.retention import KeepReason, PointTime, RetentionCounts, prunable, select_keep
from app.domain.schedule import load_timezone
from app.policies.models import Policy
from app.policies.schemas import ApplicationProtection, Retention
from app.retention.repository import RetentionRepository


@dataclass
class VmPlan:
    vm_id: uuid.UUID
    policy_id: uuid.UUID | None
    keep: dict[uuid.UUID, KeepReason] = field(default_factory=dict)
    prune: list[uuid.UUID] = field(default_factory=list)  # oldest first
    held: list[uuid.UUID] = field(default_factory=list)  # kept for reasons beyond retention (none now)


def retention_of(policy: Policy, kind: str = "image") -> RetentionCounts:
    """The policy's GFS counts for ``kind`` of point: application points have their own (in the
    policy's ``applications``), and fall back to the image ones when the policy no longer has them."""
    spec = Retention.model_validate(policy.retention)
    if kind == "application" and policy.applications:
        # Read as the API shows it: a stored object without counts has the defaults.
        spec = ApplicationProtection.model_validate(policy.applications).retention
    return RetentionCounts(daily=spec.daily, weekly=spec.weekly, monthly=spec.monthly)


def offsite_retention_of(policy: Policy, kind: str = "image") -> RetentionCounts:
    """The policy's offsite GFS counts (application points: their own onsite counts, as offsite
    copies of dumps follow the dumps' schedule)."""
    if kind == "image" and policy.offsite_retention:
        spec = Retention.model_validate(policy.offsite_retention)
        return RetentionCounts(daily=spec.daily, weekly=spec.weekly, monthly=spec.monthly)
    return retention_of(policy, kind)


class RetentionService:
    def __init__(self, session: AsyncSession) -> None:
        self.repo = RetentionRepository(session)

    async def plan_vm(self, vm_id: uuid.UUID) -> VmPlan:
        policy = await self.repo.retention_policy(vm_id)
        if policy is None:
            return VmPlan(vm_id, None)
        references = await self.repo.restore_references(vm_id)
        in_use = {pid for pid, active in references.items() if active}
        plan = VmPlan(vm_id, policy.id)
        times: dict[uuid.UUID, datetime] = {}
        # Image and application points are counted apart: a nightly dump must not push the VM's
        # image points out of their daily slots, nor the other way round.
        for kind in ("image", "application"):
            points = [PointTime(pid, at) for pid, at in await self.repo.point_times(vm_id, kind)]
            if not points:
                continue
            times.update((p.id, p.created_at) for p in points)
            keep = select_keep(
                points, retention_of(policy, kind), load_timezone(policy.timezone), in_use=in_use
            )
            plan.keep.update(keep)
            plan.prune.extend(prunable(points, keep))
        plan.prune.sort(key=lambda pid: (times[pid], str(pid)))  # oldest first, whatever the kind
        return plan

    async def delete_rows(
        self, point_ids: Collection[uuid.UUID], now: datetime | None = None
    ) -> list[uuid.UUID]:
        """Onsite retention's removals: rows of points without an offsite copy are deleted (never one
        a restore refers to, even one requested meanwhile); points copied offsite keep their row,
        marked as no longer onsite. Returns every id whose onsite manifest may now go."""
        await self.repo.lock_points(point_ids)  # offsite retention or a copy may be changing them
        statuses = await self.repo.copy_statuses(point_ids)
        copied = [pid for pid in point_ids if statuses.get(pid, ("none", True))[0] == "offsite"]
        others = [pid for pid in point_ids if pid not in set(copied)]
        marked = await self.repo.remove_onsite(copied, now or datetime.now(UTC)) if copied else []
        return [*await self.repo.delete_points(others), *marked]

    async def plan_vm_offsite(self, vm_id: uuid.UUID) -> VmPlan:
        """What offsite retention prunes among the VM's offsite copies (the policy's offsite counts,
        else its onsite ones; image and application points apart)."""
        policy = await self.repo.retention_policy(vm_id)
        if policy is None:
            return VmPlan(vm_id, None)
        references = await self.repo.restore_references(vm_id)
        in_use = {pid for pid, active in references.items() if active}
        plan = VmPlan(vm_id, policy.id)
        times: dict[uuid.UUID, datetime] = {}
        for kind in ("image", "application"):
            points = [
                PointTime(pid, at) for pid, at in await self.repo.point_times(vm_id, kind, offsite=True)
            ]
            if not points:
                continue
            times.update((p.id, p.created_at) for p in points)
            counts = offsite_retention_of(policy, kind)
            keep = select_keep(points, counts, load_timezone(policy.timezone), in_use=in_use)
            plan.keep.update(keep)
            plan.prune.extend(prunable(points, keep))
        plan.prune.sort(key=lambda pid: (times[pid], str(pid)))
        return plan

    async def remove_offsite(self, point_ids: Collection[uuid.UUID]) -> list[uuid.UUID]:
        """Offsite retention's removals in the catalog; returns the ids whose offsite manifest may go."""
        marked, deleted = await self.repo.remove_offsite(point_ids)
        return [*marked, *deleted]

    async def orphans_to_remove(
        self, vm_id: uuid.UUID, orphans: list[PointTime[str]], kind: str = "image", *, offsite: bool = False
    ) -> list[str]:
        """Manifests of this VM, of ``kind``, that have no catalog row and that retention would prune
        (with ``offsite``: manifests of the offsite repository, judged by offsite retention among
        the VM's offsite copies).

        Only orphans older than the VM's latest catalog point of the same kind are candidates: a
        backup whose manifest is committed but not yet recorded is newer than every recorded
        point of its kind. (An application backup is judged against application points only: one
        that started before the latest image backup is still newer than the latest dump.)
        """
        policy = await self.repo.retention_policy(vm_id)
        rows = await self.repo.point_times(vm_id, kind, offsite=offsite)
        if policy is None or not rows:
            return []
        latest = max(at for _, at in rows)
        references = await self.repo.restore_references(vm_id)
        in_use = {str(pid) for pid, active in references.items() if active}
        points = [PointTime(str(pid), at) for pid, at in rows] + orphans
        counts = offsite_retention_of(policy, kind) if offsite else retention_of(policy, kind)
        keep = select_keep(points, counts, load_timezone(policy.timezone), in_use=in_use)
        return [o.id for o in orphans if o.id not in keep and o.created_at < latest]

    async def vms(self, policy_id: uuid.UUID | None = None) -> list[uuid.UUID]:
        return await self.repo.vms_with_points(policy_id)

    async def vms_backed_up_since(self, since: datetime) -> list[uuid.UUID]:
        return await self.repo.vms_backed_up_since(since)
