"""Catalog generator for ``bench/scheduler.py``: inventory, policies and 90 days of history.

Rows go in with PostgreSQL ``COPY`` (asyncpg's ``copy_records_to_table``) under the tables'
real names and columns, so that the catalog looks as if the service had run for ``days`` days:

* 1 tenant, 1 vCenter (credentials sealed with the server's key), ``hosts`` hosts in clusters of
  10 that share 20 datastores per cluster, ``vms`` VMs (a fifth of them on two datastores) in
  folders ``/DC0/vm/policy-NN/...``, so that each of the ``policies`` folder-selected policies
  protects the same share;
* per VM and day: a scheduled backup job (succeeded, run by the proxy of the VM's host) and its
  restore point, except on ~1% of the days: the job failed, there is no point, and an RPO
  breach runs from when the previous point got older than the RPO to the next point;
* one open protection span per protected VM (as the RPO recorder would have opened it).
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from app.auth import tokens
from app.crypto import SecretBox
from app.domain.jobs import PRIORITY, JobKind
from app.vcenters.service import seal_credentials

CLUSTER_HOSTS = 10
CLUSTER_DATASTORES = 20
MISS_RATE = 0.01
RPO_HOURS = 26
DISK_SIZE = 40 << 30
COPY_BATCH = 50_000
WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass
class Catalog:
    """Ids of what was generated, for the measurements."""

    t0: datetime
    tenant_id: uuid.UUID = field(default_factory=uuid.uuid4)
    vcenter_id: uuid.UUID = field(default_factory=uuid.uuid4)
    host_ids: list[uuid.UUID] = field(default_factory=list)
    datastore_ids: list[uuid.UUID] = field(default_factory=list)
    vm_ids: list[uuid.UUID] = field(default_factory=list)
    vm_host: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    vm_policy: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    vm_names: dict[uuid.UUID, str] = field(default_factory=dict)
    policy_ids: list[uuid.UUID] = field(default_factory=list)
    operator_key: str = ""
    proxy_of_host: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)


def latest_slot(now: datetime, hour: int = 22) -> datetime:
    """The latest ``hour``:00 UTC at least two minutes before ``now`` (so that jobs planned a
    minute after it are due at once on the real clock)."""
    at = (now - timedelta(minutes=2)).replace(minute=0, second=0, microsecond=0)
    slot = at.replace(hour=hour)
    return slot if slot <= at else slot - timedelta(days=1)


async def copy_rows(conn: asyncpg.Connection, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """COPY dict rows (all with the same keys, in the same order) into ``table``."""
    if not rows:
        return
    columns = list(rows[0])
    for start in range(0, len(rows), COPY_BATCH):
        records = [tuple(r.values()) for r in rows[start : start + COPY_BATCH]]
        await conn.copy_records_to_table(table, records=records, columns=columns)


def _inventory_object(moid: str, name: str, cat: Catalog, seen: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "moid": moid,
        "name": name,
        "first_seen_at": seen,
        "last_seen_at": cat.t0,
        "gone_at": None,
        "vcenter_id": cat.vcenter_id,
        "tenant_id": cat.tenant_id,
    }


async def seed_inventory(
    conn: asyncpg.Connection, box: SecretBox, *, vms: int, hosts: int, policies: int, t0: datetime
) -> Catalog:
    rnd = random.Random(20260101)
    cat = Catalog(t0=t0)
    created = t0 - timedelta(days=400)
    await conn.execute(
        "INSERT INTO tenants (id, name, created_at, updated_at) VALUES ($1, 'bench-tenant', $2, $2)",
        cat.tenant_id,
        created,
    )
    await conn.execute(
        """INSERT INTO vcenters (id, tenant_id, name, url, verify_tls, credentials_encrypted,
               credentials_updated_at, connection_status, created_at, updated_at)
           VALUES ($1, $2, 'vc-bench', 'https://vc.bench.invalid/sdk', false, $3, $4, 'ok', $4, $4)""",
        cat.vcenter_id,
        cat.tenant_id,
        seal_credentials(box, "administrator@vsphere.local", "bench-password"),
        created,
    )
    clusters = max(1, (hosts + CLUSTER_HOSTS - 1) // CLUSTER_HOSTS)
    host_rows = []
    for h in range(hosts):
        row = _inventory_object(f"host-{h + 10}", f"esx{h:03d}.bench.local", cat, created)
        row.update(
            cluster=f"cluster-{h // CLUSTER_HOSTS}",
            datacenter="DC0",
            connection_state="connected",
            power_state="poweredOn",
            in_maintenance_mode=False,
        )
        host_rows.append(row)
        cat.host_ids.append(row["id"])
    await copy_rows(conn, "hosts", host_rows)
    ds_rows = []
    for d in range(clusters * CLUSTER_DATASTORES):
        row = _inventory_object(f"datastore-{d + 100}", f"ds{d:03d}", cat, created)
        capacity = 20 << 40
        free = int(capacity * rnd.uniform(0.3, 0.6))
        row.update(
            datacenter="DC0",
            type="VMFS",
            url=f"ds:///vmfs/volumes/{row['id']}/",
            capacity_bytes=capacity,
            free_bytes=free,
            free_percent=100.0 * free / capacity,
            space_status="ok",
            accessible=True,
        )
        ds_rows.append(row)
        cat.datastore_ids.append(row["id"])
    await copy_rows(conn, "datastores", ds_rows)
    vm_rows = []
    vm_ds_rows = []
    for v in range(vms):
        h = v % hosts
        name = f"vm-{v:05d}"
        row = _inventory_object(f"vm-{v + 1000}", name, cat, created)
        disk = {"key": 2000, "label": "Hard disk 1", "capacity_bytes": DISK_SIZE, "datastore_moid": "ds"}
        disk["file_name"] = f"[ds] {name}/{name}.vmdk"
        row.update(
            instance_uuid=str(uuid.uuid4()),
            bios_uuid=str(uuid.uuid4()),
            power_state="poweredOn",
            host_id=cat.host_ids[h],
            guest_os="ubuntu64Guest",
            folder_path=f"/DC0/vm/policy-{v % policies:02d}/app-{v % 7}",
            tags=json.dumps([f"env:{('prod', 'test')[v % 2]}"]),
            disks=json.dumps([disk]),
            tools_running=True,
            is_template=False,
            protection_status="unprotected",
            protection_policy_id=None,
            protection_reason=None,
            conflicting_policy_ids="[]",
        )
        vm_rows.append(row)
        vid = row["id"]
        cluster = h // CLUSTER_HOSTS
        for s in rnd.sample(range(CLUSTER_DATASTORES), 2 if v % 5 == 0 else 1):
            vm_ds_rows.append(
                {"vm_id": vid, "datastore_id": cat.datastore_ids[cluster * CLUSTER_DATASTORES + s]}
            )
        cat.vm_ids.append(vid)
        cat.vm_host[vid] = cat.host_ids[h]
        cat.vm_names[vid] = name
    await copy_rows(conn, "vms", vm_rows)
    await copy_rows(conn, "vm_datastores", vm_ds_rows)
    policy_rows = []
    for p in range(policies):
        policy_rows.append(
            {
                "id": uuid.uuid4(),
                "created_at": created,
                "updated_at": created,
                "tenant_id": cat.tenant_id,
                "name": f"policy-{p:02d}",
                "enabled": True,
                "schedule": json.dumps({"type": "weekly", "times": ["22:00"], "days": WEEK}),
                "timezone": "UTC",
                # 24 h: the servers run on the real clock and claims skip a backup whose window
                # has closed, so the day's jobs must be in their window whenever the bench runs.
                "backup_window": json.dumps({"start": "22:00", "duration_minutes": 1440}),
                "rpo_hours": RPO_HOURS,
                "rto_hours": 12,
                # Keeps the whole history: 90 daily points per VM is what the figures assume.
                "retention": json.dumps({"daily": 90, "weekly": 0, "monthly": 0}),
                "offsite_copy": False,
                "application_aware": False,
                "retry_count": 3,
                "selection": json.dumps({"vm_ids": [], "folders": [f"/DC0/vm/policy-{p:02d}"], "tags": []}),
                "exclusions": json.dumps({"vm_ids": [], "folders": [], "tags": []}),
                "last_planned_slot": t0 - timedelta(days=1),
            }
        )
        cat.policy_ids.append(policy_rows[-1]["id"])
    await copy_rows(conn, "policies", policy_rows)
    for v, vid in enumerate(cat.vm_ids):
        cat.vm_policy[vid] = cat.policy_ids[v % policies]
    issued = tokens.issue(tokens.API_KEY_PREFIX)
    await conn.execute(
        """INSERT INTO api_keys (id, name, role, tenant_id, lookup_id, secret_hash, created_at)
           VALUES ($1, 'bench operator', 'operator', NULL, $2, $3, $4)""",
        uuid.uuid4(),
        issued.lookup_id,
        issued.secret_hash,
        created,
    )
    cat.operator_key = issued.secret
    return cat


def _point_offset(v: int) -> timedelta:
    """When in the window a VM's backup ends: spread over the first 7 hours."""
    return timedelta(seconds=120 + (v * 7919) % (7 * 3600))


async def seed_history(conn: asyncpg.Connection, cat: Catalog, days: int) -> dict[str, int]:
    """Jobs, restore points, protection spans and breaches for ``days`` days before ``t0``."""
    rnd = random.Random(7)
    priority = PRIORITY[JobKind.BACKUP]
    counts = {"jobs": 0, "restore_points": 0, "breaches": 0, "spans": 0}
    last_point: dict[uuid.UUID, datetime] = {}
    open_breach: dict[uuid.UUID, datetime] = {}
    breaches: list[dict[str, Any]] = []
    rpo = timedelta(hours=RPO_HOURS)
    protected_since = cat.t0 - timedelta(days=days + 1)
    for day in range(days, 0, -1):
        slot = cat.t0 - timedelta(days=day)
        jobs: list[dict[str, Any]] = []
        points: list[dict[str, Any]] = []
        for v, vid in enumerate(cat.vm_ids):
            done = slot + _point_offset(v)
            job = {
                "id": uuid.uuid4(),
                "kind": "backup",
                "state": "succeeded",
                "trigger": "scheduled",
                "priority": priority,
                "tenant_id": cat.tenant_id,
                "vm_id": vid,
                "policy_id": cat.vm_policy[vid],
                "created_at": slot,
                "not_before": slot,
                "attempt": 1,
                "max_attempts": 4,
                "proxy_id": cat.proxy_of_host.get(cat.vm_host[vid]),
                "started_at": done - timedelta(minutes=3),
                "finished_at": done,
                "cancel_requested": False,
                "phase": "done",
                "bytes_total": DISK_SIZE,
                "bytes_read": 0,
                "bytes_new": 0,
                "bytes_stored": 0,
                "progress_at": done,
                "warnings": "[]",
                "error": None,
                "error_kind": None,
                "params": '{"quiesce": false}',
                "scheduled_for": slot,
                "window_end": slot + timedelta(hours=8),
                "result": "{}",
            }
            jobs.append(job)
            if rnd.random() < MISS_RATE:
                job.update(
                    state="failed", attempt=4, error="could not create the snapshot", error_kind="transient"
                )
                anchor = last_point.get(vid, protected_since)
                if vid not in open_breach and anchor + rpo < cat.t0:
                    open_breach[vid] = anchor + rpo
                continue
            rp = uuid.uuid4()
            new = 1_000_000_000 + (v * 104729 + day) % 500_000_000
            job.update(
                bytes_read=new,
                bytes_new=new // 2,
                bytes_stored=new // 4,
                params=json.dumps({"quiesce": False, "restore_point_id": str(rp)}),
                result=json.dumps({"restore_point_id": str(rp)}),
            )
            disk = {"key": 2000, "label": "Hard disk 1", "size": DISK_SIZE, "change_id": f"52 de ad/{day}"}
            disk.update(bytes_read=new, bytes_new=new // 2, bytes_stored=new // 4, used_cbt=True)
            points.append(
                {
                    "id": rp,
                    "tenant_id": cat.tenant_id,
                    "vm_id": vid,
                    "policy_id": cat.vm_policy[vid],
                    "job_id": job["id"],
                    "created_at": done,
                    "vm_name": cat.vm_names[vid],
                    "location": "onsite",
                    "consistency": "crash",
                    "size_bytes": DISK_SIZE,
                    "bytes_read": new,
                    "bytes_new": new // 2,
                    "bytes_stored": new // 4,
                    "disks": json.dumps([disk]),
                    "used_cbt": True,
                    "warnings": "[]",
                }
            )
            breach_start = open_breach.pop(vid, None)
            if breach_start is not None and breach_start < done:
                breaches.append(_breach(cat, vid, breach_start, done))
            last_point[vid] = done
        await copy_rows(conn, "jobs", jobs)
        await copy_rows(conn, "restore_points", points)
        counts["jobs"] += len(jobs)
        counts["restore_points"] += len(points)
    breaches.extend(_breach(cat, vid, started, None) for vid, started in open_breach.items())
    await copy_rows(conn, "rpo_breaches", breaches)
    spans = [
        {
            "id": uuid.uuid4(),
            "tenant_id": cat.tenant_id,
            "vm_id": vid,
            "policy_id": cat.vm_policy[vid],
            "started_at": protected_since,
            "ended_at": None,
        }
        for vid in cat.vm_ids
    ]
    await copy_rows(conn, "rpo_protection_spans", spans)
    counts["breaches"] = len(breaches)
    counts["spans"] = len(spans)
    return counts


def _breach(cat: Catalog, vm_id: uuid.UUID, started: datetime, ended: datetime | None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "tenant_id": cat.tenant_id,
        "vm_id": vm_id,
        "policy_id": cat.vm_policy[vm_id],
        "rpo_hours": RPO_HOURS,
        "started_at": started,
        "ended_at": ended,
        "cause": "failed_jobs",
        "causes": '["failed_jobs"]',
        "detail": "the last backup jobs failed",
        "resolution": "backed_up" if ended else None,
        "updated_at": ended or cat.t0,
    }
