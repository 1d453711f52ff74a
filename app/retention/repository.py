"""All SQL of retention: a VM's points, what uses them, which policy applies, deleting rows."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.dialect import lock_for_decision
from app.domain.jobs import ACTIVE_RESTORE_STATES, JobKind, JobState
from app.inventory.models import VirtualMachine
from app.jobs.models import Job
from app.policies.models import Policy
from app.restore_points.models import RestorePoint
from app.restores.models import Restore

ACTIVE_JOB_STATES = (JobState.QUEUED.value, JobState.RUNNING.value)
#: Jobs that write a restore point into the onsite repository.
POINT_WRITING_KINDS = (JobKind.BACKUP.value, JobKind.APP_BACKUP.value)
#: Jobs that write chunks into the onsite repository: restore points, and file restores' archives.
ONSITE_WRITING_KINDS = (*POINT_WRITING_KINDS, JobKind.FILE_RESTORE.value)
#: Jobs that write chunks into the offsite repository.
OFFSITE_WRITING_KINDS = (JobKind.OFFSITE_COPY.value,)


class RetentionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def point_times(
        self, vm_id: uuid.UUID, kind: str = "image", *, offsite: bool = False
    ) -> list[tuple[uuid.UUID, datetime]]:
        """The VM's points of ``kind`` present onsite (or, with ``offsite``, copied offsite)."""
        where = [RestorePoint.vm_id == vm_id, RestorePoint.kind == kind]
        if offsite:
            where.append(RestorePoint.copy_status == "offsite")
        else:
            where.append(RestorePoint.onsite_removed_at.is_(None))
        rows = await self.session.execute(select(RestorePoint.id, RestorePoint.created_at).where(*where))
        return list(rows.tuples())

    async def restore_references(self, vm_id: uuid.UUID) -> dict[uuid.UUID, bool]:
        """Points of the VM that restores refer to, and whether one of those restores is active."""
        rows = await self.session.execute(
            select(Restore.restore_point_id, Restore.state)
            .join(RestorePoint, RestorePoint.id == Restore.restore_point_id)
            .where(RestorePoint.vm_id == vm_id)
        )
        refs: dict[uuid.UUID, bool] = {}
        for point_id, state in rows.tuples():
            if point_id is not None:
                refs[point_id] = refs.get(point_id, False) or state in ACTIVE_RESTORE_STATES
        return refs

    async def retention_policy(self, vm_id: uuid.UUID) -> Policy | None:
        """The policy protecting the VM now; else the one that made its latest restore point."""
        vm_policy = (
            await self.session.execute(
                select(VirtualMachine.protection_policy_id).where(VirtualMachine.id == vm_id)
            )
        ).scalar_one_or_none()
        policy_id = vm_policy
        if policy_id is None:
            policy_id = (
                await self.session.execute(
                    select(RestorePoint.policy_id)
                    .where(RestorePoint.vm_id == vm_id)
                    .order_by(RestorePoint.created_at.desc(), RestorePoint.id)
                    .limit(1)
                )
            ).scalar_one_or_none()
        if policy_id is None:
            return None
        return await self.session.get(Policy, policy_id)

    async def vms_with_points(self, policy_id: uuid.UUID | None = None) -> list[uuid.UUID]:
        stmt = select(RestorePoint.vm_id).distinct()
        if policy_id is not None:
            protected_by = select(VirtualMachine.id).where(VirtualMachine.protection_policy_id == policy_id)
            stmt = stmt.where((RestorePoint.vm_id.in_(protected_by)) | (RestorePoint.policy_id == policy_id))
        return sorted((await self.session.execute(stmt)).scalars(), key=str)

    async def vms_backed_up_since(self, since: datetime) -> list[uuid.UUID]:
        """VMs with a backup (image, or a guest agent's application backup) that succeeded, and so
        recorded a restore point, at or after ``since``."""
        rows = await self.session.execute(
            select(Job.vm_id)
            .distinct()
            .where(
                Job.kind.in_(POINT_WRITING_KINDS),
                Job.state == JobState.SUCCEEDED.value,
                Job.finished_at >= since,
            )
        )
        return sorted(rows.scalars(), key=str)

    async def vms_with_active_backups(self) -> set[uuid.UUID]:
        """VMs with a job that may be writing a restore point: an image backup or a guest agent's
        application backup, queued or running (its manifest may be committed before its row)."""
        rows = await self.session.execute(
            select(Job.vm_id).where(Job.kind.in_(POINT_WRITING_KINDS), Job.state.in_(ACTIVE_JOB_STATES))
        )
        return set(rows.scalars())

    async def running_writers(self, kinds: Collection[str]) -> int:
        """How many jobs of ``kinds`` (those that write into a repository) run now: a lapsed
        lease too, until the reaper takes the job back (its proxy may only be late)."""
        rows = await self.session.execute(
            select(Job.id).where(Job.kind.in_(list(kinds)), Job.state == JobState.RUNNING.value)
        )
        return len(rows.all())

    async def all_point_ids(self) -> set[uuid.UUID]:
        return set((await self.session.execute(select(RestorePoint.id))).scalars())

    async def onsite_removed_ids(self) -> set[uuid.UUID]:
        """Points onsite retention removed from the onsite repository (their row stays for the
        offsite copy). No restore reads them onsite: none did when they were marked, and none is
        sent there since (``where`` skips them)."""
        rows = await self.session.execute(
            select(RestorePoint.id).where(RestorePoint.onsite_removed_at.is_not(None))
        )
        return set(rows.scalars())

    async def offsite_pruned_ids(self) -> set[uuid.UUID]:
        """Points whose offsite copy offsite retention removed (their row stays for the onsite copy)."""
        rows = await self.session.execute(select(RestorePoint.id).where(RestorePoint.copy_status == "pruned"))
        return set(rows.scalars())

    async def vm_ids_existing(self, vm_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        if not vm_ids:
            return set()
        rows = await self.session.execute(select(VirtualMachine.id).where(VirtualMachine.id.in_(vm_ids)))
        return set(rows.scalars())

    async def lock_points(self, point_ids: Collection[uuid.UUID]) -> None:
        """Lock the points before reading what decides their fate (copy status, onsite or not):
        onsite and offsite retention, and a copy's completion, then take turns on each point,
        and the second reads what the first committed (see ``_lock_points``)."""
        if point_ids:
            await self._lock_points(point_ids)

    async def _lock_points(self, point_ids: Collection[uuid.UUID]) -> None:
        """Lock the points before checking which restores use them (``lock_for_decision``).

        A restore request inserting a reference to one of them holds a key-share lock on it until
        it commits; the lock waits for that, and the statement after it takes a fresh snapshot
        that sees the new restore. Without it, the delete would wait on the same row lock and
        then check the restores in its old snapshot, deleting a point a new restore uses (the
        reference is ON DELETE SET NULL). A request that comes after the lock waits for the
        prune's commit and then finds its point gone (409, then 404 on retry)."""
        stmt = select(RestorePoint.id).where(RestorePoint.id.in_(list(point_ids)))
        await self.session.execute(lock_for_decision(stmt, self.session))

    async def delete_points(self, point_ids: Collection[uuid.UUID]) -> list[uuid.UUID]:
        """Delete the rows no requested or running restore uses; return the ids deleted.

        Finished restores keep their record: its reference becomes null (ON DELETE SET NULL).
        """
        if not point_ids:
            return []
        await self._lock_points(point_ids)
        referenced = exists().where(
            Restore.restore_point_id == RestorePoint.id, Restore.state.in_(ACTIVE_RESTORE_STATES)
        )
        rows = await self.session.execute(
            delete(RestorePoint)
            .where(RestorePoint.id.in_(list(point_ids)), ~referenced)
            .returning(RestorePoint.id)
            .execution_options(synchronize_session=False)
        )
        return list(rows.scalars())

    async def remove_onsite(self, point_ids: Collection[uuid.UUID], now: datetime) -> list[uuid.UUID]:
        """Onsite retention over points that live on offsite: the row stays, marked onsite-removed
        (never while a restore reading onsite uses it); return the ids marked."""
        if not point_ids:
            return []
        await self._lock_points(point_ids)
        reading_onsite = exists().where(
            Restore.restore_point_id == RestorePoint.id,
            Restore.state.in_(ACTIVE_RESTORE_STATES),
            Restore.source_location == "onsite",
        )
        rows = await self.session.execute(
            update(RestorePoint)
            .where(
                RestorePoint.id.in_(list(point_ids)),
                RestorePoint.copy_status == "offsite",
                RestorePoint.onsite_removed_at.is_(None),
                ~reading_onsite,
            )
            .values(onsite_removed_at=now)
            .returning(RestorePoint.id)
            .execution_options(synchronize_session=False)
        )
        return list(rows.scalars())

    async def copy_statuses(self, point_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, tuple[str, bool]]:
        """Each point's copy status and whether it is still onsite."""
        if not point_ids:
            return {}
        rows = await self.session.execute(
            select(RestorePoint.id, RestorePoint.copy_status, RestorePoint.onsite_removed_at).where(
                RestorePoint.id.in_(list(point_ids))
            )
        )
        return {pid: (status, removed is None) for pid, status, removed in rows.tuples()}

    async def remove_offsite(
        self, point_ids: Collection[uuid.UUID]
    ) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
        """Offsite retention: points still onsite become ``pruned`` copies; points gone onsite lose
        their row. Never one an active restore uses. Returns (marked, deleted)."""
        await self.lock_points(point_ids)  # onsite retention may be removing the same point
        statuses = await self.copy_statuses(point_ids)
        onsite = [pid for pid, (_, present) in statuses.items() if present]
        gone = [pid for pid, (_, present) in statuses.items() if not present]
        marked: list[uuid.UUID] = []
        if onsite:
            busy = exists().where(
                Restore.restore_point_id == RestorePoint.id,
                Restore.state.in_(ACTIVE_RESTORE_STATES),
                Restore.source_location == "offsite",
            )
            rows = await self.session.execute(
                update(RestorePoint)
                .where(RestorePoint.id.in_(onsite), RestorePoint.onsite_removed_at.is_(None), ~busy)
                .values(copy_status="pruned")
                .returning(RestorePoint.id)
                .execution_options(synchronize_session=False)
            )
            marked = list(rows.scalars())
        return marked, await self.delete_points(gone)
