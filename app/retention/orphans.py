"""Removing orphan manifests: restore points a repository holds that the catalog no longer wants.

Both repositories get them the same way: the catalog commits a removal first and the repository's
manifest goes after, so a crash or an unreachable repository in between leaves the manifest
behind; and an offsite copy that finishes after onsite retention removed its point's row writes a
manifest no row describes. The harmless side (the catalog never lists what cannot be restored),
but its chunks stay referenced until the manifest goes.

An orphan is removed only when retention, applied to the VM's catalog points and its orphans
together, does not keep it, and it is older than the VM's latest catalog point (see
``RetentionService.orphans_to_remove``). Orphans of VMs the catalog does not know, or without a
retention policy, are never touched: a repository shared with a rebuilt catalog keeps them.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Collection

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.domain.retention import PointTime
from app.retention.onsite import OnsiteRepository
from app.retention.service import RetentionService

log = logging.getLogger(__name__)


async def remove_orphans(
    sessionmaker: async_sessionmaker[AsyncSession],
    repository: OnsiteRepository,
    orphan_ids: list[str],
    *,
    busy_vms: Collection[uuid.UUID] = (),
    offsite: bool = False,
) -> int:
    """Remove those of ``orphan_ids`` (manifests without a catalog row) that retention would
    prune, VM by VM, except VMs in ``busy_vms``; return how many went."""
    if not orphan_ids:
        return 0
    # Image and application points are judged apart, each against its own kind's catalog points
    # and retention, as retention counts them.
    by_vm: dict[tuple[uuid.UUID, str], list[PointTime[str]]] = defaultdict(list)
    for facts in await repository.read_facts(orphan_ids):
        try:
            vm_id = uuid.UUID(str(facts.metadata.get("vm_id")))
        except ValueError:
            continue  # not written by a backup job of ours
        kind = "application" if facts.metadata.get("kind") == "application" else "image"
        by_vm[(vm_id, kind)].append(PointTime(facts.id, facts.created_at))
    where = "offsite" if offsite else "onsite"
    deleted = 0
    for (vm_id, kind), orphans in sorted(by_vm.items(), key=lambda item: (str(item[0][0]), item[0][1])):
        if vm_id in busy_vms:
            continue
        async with sessionmaker() as session:
            doomed = await RetentionService(session).orphans_to_remove(vm_id, orphans, kind, offsite=offsite)
        if doomed:
            removed = await repository.delete_restore_points(doomed)
            deleted += len(removed)
            log.info(
                "removed %d orphan %s manifest(s) of VM %s: %s",
                len(removed),
                where,
                vm_id,
                ", ".join(removed),
            )
    return deleted
