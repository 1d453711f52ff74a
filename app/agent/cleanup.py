"""Removing the snapshots an earlier run of this proxy left behind.

A proxy that crashed mid-backup leaves its snapshot on the VM; delta disks then grow until the
datastore fills. Snapshots carry their owner in their name, so a restarted proxy finds and
removes its own, on every VM of every vCenter it serves, before it takes new work.
"""

from __future__ import annotations

import logging

from app.contracts.agent import CleanupTargets, VCenterAccess
from app.vadp.errors import SnapshotCleanupError, VCenterError
from app.vadp.session import open_session
from app.vadp.snapshots import remove_snapshots_named
from app.vadp.types import VCenterEndpoint

log = logging.getLogger(__name__)


def endpoint_of(access: VCenterAccess, timeout_s: float = 60.0) -> VCenterEndpoint:
    return VCenterEndpoint(
        url=access.url,
        username=access.username,
        password=access.password,
        verify_tls=access.verify_tls,
        timeout_s=timeout_s,
    )


def remove_leftover_snapshots(targets: CleanupTargets) -> list[str]:
    removed: list[str] = []
    for target in targets.targets:
        try:
            with open_session(endpoint_of(target.vcenter)) as session:
                removed.extend(remove_snapshots_named(session, None, target.snapshot_prefix))
        except SnapshotCleanupError as exc:
            removed.extend(exc.removed)
            log.error("snapshot clean-up on %s incomplete: %s", target.vcenter.url, exc)
        except VCenterError as exc:
            log.error("snapshot clean-up on %s failed: %s", target.vcenter.url, exc.message)
    return removed
