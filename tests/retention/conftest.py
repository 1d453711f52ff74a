"""A small catalog (tenant, vCenter, VMs, a policy) and real restore points in a real repository.

The VMs are catalog rows (no simulator needed: retention never talks to vCenter); the policy is
created through the API so that protection is resolved as in production; each restore point is
a real chunkstore restore point (small disk, 64 KiB chunks) plus its catalog row.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.chunkstore import FsBackend, Repository, backup_disk, iter_disk
from app.context import AppContext
from app.inventory.models import VirtualMachine
from app.jobs.models import Job
from app.restore_points.models import RestorePoint
from app.restores.models import Restore
from app.vcenters.models import VCenter
from tests.support.app import CustomerFactory

CHUNK = 64 * 1024
DISK = 4 * CHUNK


class BytesReader:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def disk_for(point_id: uuid.UUID) -> bytes:
    """Four chunks: the first shared by every point, three of the point's own."""
    return SHARED + random.Random(point_id.int).randbytes(DISK - CHUNK)


SHARED = random.Random(0).randbytes(CHUNK)


@dataclass
class World:
    ctx: AppContext
    operator: httpx.AsyncClient
    tenant_id: uuid.UUID
    vcenter_id: uuid.UUID
    repo: Repository
    disks: dict[uuid.UUID, bytes] = field(default_factory=dict)

    async def vm(self, name: str) -> uuid.UUID:
        now = self.ctx.clock.now()
        vm = VirtualMachine(
            id=uuid.uuid4(),
            tenant_id=self.tenant_id,
            vcenter_id=self.vcenter_id,
            moid=f"vm-{name}",
            name=name,
            instance_uuid=str(uuid.uuid4()),
            power_state="poweredOn",
            folder_path="/DC0/vm",
            tags=[],
            disks=[],
            first_seen_at=now,
            last_seen_at=now,
        )
        async with self.ctx.sessionmaker.begin() as session:
            session.add(vm)
        return vm.id

    async def policy(
        self, vm_ids: list[uuid.UUID], applications: dict[str, Any] | None = None, **retention: int
    ) -> uuid.UUID:
        response = await self.operator.post(
            "/api/v1/policies",
            json={
                "tenant_id": str(self.tenant_id),
                "name": f"policy-{uuid.uuid4().hex[:6]}",
                "timezone": "Europe/Berlin",
                "retention": retention,
                "selection": {"vm_ids": [str(v) for v in vm_ids]},
                "applications": applications,
            },
        )
        assert response.status_code == 201, response.text
        return uuid.UUID(response.json()["id"])

    def write_manifest(
        self, point_id: uuid.UUID, vm_id: uuid.UUID, created_at: datetime, data: bytes, kind: str = "image"
    ) -> None:
        """A committed manifest, with the metadata the backup of ``kind`` writes (guest agents
        mark their application points)."""
        result = backup_disk(self.repo, BytesReader(data), len(data), workers=1)
        metadata = {"vm_id": str(vm_id), **({"kind": "application"} if kind == "application" else {})}
        writer = self.repo.begin_restore_point(
            str(point_id), vm_config={}, metadata=metadata, created_at=created_at
        )
        writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
        writer.commit()

    async def point(
        self,
        vm_id: uuid.UUID,
        created_at: datetime,
        policy_id: uuid.UUID | None = None,
        *,
        job: bool = False,
        kind: str = "image",
    ) -> uuid.UUID:
        """A restore point in the repository and the catalog (and, with ``job``, its backup job)."""
        point_id = uuid.uuid4()
        data = disk_for(point_id)
        self.write_manifest(point_id, vm_id, created_at, data, kind)
        self.disks[point_id] = data
        async with self.ctx.sessionmaker.begin() as session:
            job_id = None
            if job:
                job_id = uuid.uuid4()
                job_kind = "app_backup" if kind == "application" else "backup"
                session.add(
                    backup_job(job_id, self.tenant_id, vm_id, self.ctx.clock.now(), "succeeded", job_kind)
                )
            session.add(
                RestorePoint(
                    id=point_id,
                    tenant_id=self.tenant_id,
                    vm_id=vm_id,
                    policy_id=policy_id,
                    job_id=job_id,
                    created_at=created_at,
                    vm_name="vm",
                    location="onsite",
                    consistency="crash",
                    size_bytes=len(data),
                    bytes_read=len(data),
                    bytes_new=len(data),
                    bytes_stored=len(data),
                    disks=[{"key": "2000", "label": "Hard disk 1", "size": len(data)}],
                    kind=kind,
                    warnings=[],
                )
            )
        return point_id

    async def restore(self, point_id: uuid.UUID, vm_id: uuid.UUID, state: str) -> uuid.UUID:
        restore_id = uuid.uuid4()
        async with self.ctx.sessionmaker.begin() as session:
            session.add(
                Restore(
                    id=restore_id,
                    tenant_id=self.tenant_id,
                    vm_id=vm_id,
                    restore_point_id=point_id,
                    type="vm",
                    target="new",
                    target_params={},
                    state=state,
                    source_location="onsite",
                    requested_at=self.ctx.clock.now(),
                    result={},
                )
            )
        return restore_id

    def restored(self, point_id: uuid.UUID) -> bytes:
        manifest = self.repo.read_restore_point(str(point_id))
        return b"".join(iter_disk(self.repo, self.repo.read_index(manifest.disks[0]), workers=1))


def backup_job(
    job_id: uuid.UUID,
    tenant_id: uuid.UUID,
    vm_id: uuid.UUID,
    now: datetime,
    state: str,
    kind: str = "backup",
) -> Job:
    running = state == "running"
    return Job(
        id=job_id,
        kind=kind,
        state=state,
        trigger="manual",
        priority=10,
        tenant_id=tenant_id,
        vm_id=vm_id,
        created_at=now,
        not_before=now,
        attempt=1,
        max_attempts=1,
        started_at=now,
        finished_at=None if running else now,
        lease_expires_at=now + timedelta(minutes=5) if running else None,
        params={},
    )


@pytest.fixture
async def world(ctx: AppContext, operator: httpx.AsyncClient, customer_of: CustomerFactory) -> World:
    _, tenant_id = await customer_of("Acme")
    now = ctx.clock.now()
    vcenter = VCenter(
        id=uuid.uuid4(),
        tenant_id=tenant_id,
        name="vc",
        url="https://vc.invalid/sdk",
        credentials_encrypted=b"-",
        credentials_updated_at=now,
        created_at=now,
        updated_at=now,
    )
    async with ctx.sessionmaker.begin() as session:
        session.add(vcenter)
    root = ctx.settings.resolved_repository_path
    root.mkdir(parents=True)
    repo = Repository.create(FsBackend(root, durable=False), chunk_size=CHUNK)
    return World(ctx, operator, tenant_id, vcenter.id, repo)


def berlin_evening(day: datetime) -> datetime:
    from zoneinfo import ZoneInfo

    return day.replace(hour=22, minute=0, tzinfo=ZoneInfo("Europe/Berlin")).astimezone(UTC)


def ids(values: Any) -> set[str]:
    return {str(v) for v in values}
