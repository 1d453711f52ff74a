"""Pruning: the catalog rows first, then the repository's manifests, and reconciling leftovers.

Order and crash safety. A VM is pruned in its own transaction: the plan is made and the rows
are deleted (locked first, so a restore request racing with the prune either is seen and keeps
its point, or waits and finds the point gone), the transaction commits, and only then are the
manifests (and their index objects) removed from the repository. A crash between the two leaves
*orphan manifests*: restore points the repository holds but the catalog no longer lists. That
is the harmless side: the catalog never shows a point that cannot be restored, the orphan's
chunks stay referenced (GC keeps them) until the manifest goes. The opposite order could leave a
catalog row whose manifest is gone, which a user could pick for a restore that then fails.

A point that lives on offsite keeps its row, marked as removed onsite, and its onsite manifest
goes after the commit the same way; one whose deletion failed is removed by the next
reconcile, whatever retention says now (the removal was committed).

Orphan manifests are removed by :meth:`Pruner.reconcile`, part of every full pass: a manifest
without a catalog row, whose metadata names a VM of the catalog, is removed when it is older
than that VM's latest catalog point (so it is not a backup whose manifest is committed and whose
row is about to be recorded), that VM has no queued or running backup, and the VM's retention,
applied to its catalog points and its orphans together, does not keep it. Orphans of VMs the
catalog does not know (a repository shared with a rebuilt catalog, say) are never touched.

Chunks are not touched here: garbage collection frees those no manifest references any more.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.retention.onsite import OnsiteRepository
from app.retention.orphans import remove_orphans
from app.retention.repository import RetentionRepository
from app.retention.service import RetentionService, VmPlan

log = logging.getLogger(__name__)


@dataclass
class PruneReport:
    vms: int = 0
    points_deleted: int = 0
    manifests_deleted: int = 0
    held: int = 0  # beyond retention, kept because a restore's record refers to them
    orphans_deleted: int = 0
    failed_vms: list[uuid.UUID] = field(default_factory=list)


@dataclass
class VmPruneResult:
    plan: VmPlan
    manifests_removed: list[str] = field(default_factory=list)


class Pruner:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], onsite: OnsiteRepository) -> None:
        self.sessionmaker = sessionmaker
        self.onsite = onsite

    async def prune_vm(self, vm_id: uuid.UUID) -> VmPruneResult:
        """Prune one VM: its plan (what was kept, deleted and held back) and the manifests removed."""
        await self.onsite.open()  # an unusable repository stops us before any row goes
        async with self.sessionmaker.begin() as session:
            service = RetentionService(session)
            plan = await service.plan_vm(vm_id)
            deleted = await service.delete_rows(plan.prune)
        # Committed: the catalog no longer lists them. Now the repository (see the module doc).
        gone = set(deleted)
        plan.prune = [pid for pid in plan.prune if pid in gone]
        result = VmPruneResult(plan)
        if plan.prune:
            removed = await self.onsite.delete_restore_points([str(pid) for pid in plan.prune])
            result.manifests_removed = removed
            log.info(
                "pruned %d restore point(s) of VM %s under policy %s (%d manifests removed): %s",
                len(plan.prune),
                vm_id,
                plan.policy_id,
                len(removed),
                ", ".join(str(pid) for pid in plan.prune),
            )
        return result

    async def prune_vms(self, vm_ids: Iterable[uuid.UUID]) -> PruneReport:
        report = PruneReport()
        for vm_id in vm_ids:
            try:
                result = await self.prune_vm(vm_id)
            except Exception:
                # One VM's trouble (a race with a restore request, a damaged policy) must not
                # stop the others; the next pass tries again.
                log.exception("pruning VM %s failed; it is retried on the next pass", vm_id)
                report.failed_vms.append(vm_id)
                continue
            report.vms += 1
            report.points_deleted += len(result.plan.prune)
            report.manifests_deleted += len(result.manifests_removed)
            report.held += len(result.plan.held)
        return report

    async def prune_all(self, policy_id: uuid.UUID | None = None) -> PruneReport:
        """Every VM that has restore points (or those of one policy); a full pass also reconciles."""
        await self.onsite.open()
        async with self.sessionmaker() as session:
            vm_ids = await RetentionService(session).vms(policy_id)
        report = await self.prune_vms(vm_ids)
        if policy_id is None:
            report.orphans_deleted = await self.reconcile()
        return report

    async def backed_up_since(self, since: datetime) -> list[uuid.UUID]:
        async with self.sessionmaker() as session:
            return await RetentionService(session).vms_backed_up_since(since)

    async def reconcile(self) -> int:
        """Remove the manifests of points whose onsite removal was committed, and orphan manifests
        that retention would prune (see the module doc); return how many went."""
        manifest_ids = await self.onsite.list_restore_points()
        async with self.sessionmaker() as session:
            repo = RetentionRepository(session)
            # Active backups first, then the catalog's ids: a backup recorded between the two
            # queries is then either still active or already listed.
            busy = await repo.vms_with_active_backups()
            known = {str(pid) for pid in await repo.all_point_ids()}
            removed_onsite = {str(pid) for pid in await repo.onsite_removed_ids()}
        removed = await self.onsite.delete_restore_points(
            [mid for mid in manifest_ids if mid in removed_onsite]
        )
        if removed:
            log.info("removed %d onsite manifest(s) whose removal was committed earlier", len(removed))
        orphan_ids = [mid for mid in manifest_ids if mid not in known]
        return len(removed) + await remove_orphans(self.sessionmaker, self.onsite, orphan_ids, busy_vms=busy)
