"""LVM2 logical volumes whose physical volumes are on the disk being browsed.

dissect.volume reads the PV labels and the volume group metadata (the text of the newest metadata area).
The logical volume itself is not read through dissect's stream but mapped here onto the disk: each
linear segment is ``extent_count`` extents of one PV starting at ``pe_start + extent * extent_size``,
so the volume becomes a ``MappedSource`` over the disk. That keeps reads thread-safe and lets file
downloads use the disk's read-ahead, like partitions.

Only what is certain is offered: visible logical volumes whose segments are all linear (or striped over
one stripe, which is the same) and all on physical volumes of this disk. Others are listed with a
``problem`` saying why they cannot be browsed (thin, RAID, snapshot and cache volumes; volumes with
extents on another disk of the VM); hidden internal volumes (thin pool metadata and the like) are not
listed at all. When a group's physical volumes disagree, the metadata with the highest sequence number
(the newest) is used.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from app.files import _dissect as d
from app.files.detect import Detection
from app.files.errors import describe
from app.files.models import FsType, Scheme, Volume
from app.files.source import ByteSource, MappedSource, SourceStream
from app.files.volumes import Found, probe

log = logging.getLogger(__name__)

SECTOR = 512  # LVM2 counts pe_start and extent_size in 512-byte sectors
_LINEAR = ("linear", "striped")


def logical_volumes(disk: ByteSource, physical: Sequence[Found]) -> tuple[list[Found], dict[str, str]]:
    """The logical volumes of the groups whose PVs are among ``physical`` (volumes detected as LVM2), and
    a problem for each PV volume (by id) whose metadata could not be read."""
    problems: dict[str, str] = {}
    groups: dict[str, list[tuple[Found, Any, int]]] = {}  # VG id → (PV volume, device, seqno)
    for found in physical:
        if found.source is None or found.volume.offset is None:
            continue
        try:
            device = d.LVM2Device(SourceStream(found.source))
            metadata = device.metadata or {}
            names = [key for key, value in metadata.items() if isinstance(value, dict)]
            if len(names) != 1:
                raise ValueError(f"{len(names)} volume groups described, expected 1")
            group = metadata[names[0]]
            groups.setdefault(str(group["id"]), []).append((found, device, int(group.get("seqno", 0))))
        except Exception as exc:
            log.info("LVM2 metadata on volume %s unreadable: %s", found.volume.id, exc)
            problems[found.volume.id] = (
                f"the LVM2 metadata on this physical volume cannot be read ({describe(exc)})"
            )
    volumes: list[Found] = []
    for members in groups.values():
        members.sort(key=lambda member: -member[2])  # newest metadata first: dissect reads the first
        try:
            group = d.LVM2([device for _, device, _ in members]).volume_group
        except Exception as exc:
            for found, _, _ in members:
                problems[found.volume.id] = f"the LVM2 volume group cannot be read ({describe(exc)})"
            continue
        starts = {id(device): found.volume.offset or 0 for found, device, _ in members}
        for lv in sorted(group.logical_volumes.values(), key=lambda lv: str(lv.name)):
            if lv.is_visible:
                volumes.append(_logical_volume(disk, group, lv, starts))
    return sorted(volumes, key=lambda found: found.volume.id), problems


def _logical_volume(disk: ByteSource, group: Any, lv: Any, starts: dict[int, int]) -> Found:
    """One logical volume, probed; a volume with a problem when its metadata makes no sense."""
    try:
        return _map_logical_volume(disk, group, lv, starts)
    except Exception as exc:
        log.info("LVM2 logical volume %s/%s unreadable: %s", group.name, lv.name, exc)
        problem = f"its LVM2 metadata cannot be read ({describe(exc)})"
        volume = Volume(
            id=f"lvm:{group.name}/{lv.name}",
            partition=None,
            scheme=Scheme.LVM,
            offset=None,
            size=0,
            filesystem=FsType.UNKNOWN,
            type_name="LVM2 logical volume",
            name=str(lv.name),
            problem=problem,
        )
        return Found(volume, None, Detection(FsType.UNKNOWN, problem=problem))


def _map_logical_volume(disk: ByteSource, group: Any, lv: Any, starts: dict[int, int]) -> Found:
    extent = int(group.extent_size) * SECTOR
    segments = sorted(lv.segments, key=lambda segment: segment.start_extent)
    size = sum(int(segment.extent_count) for segment in segments) * extent
    pieces, problem = _pieces(disk, group, segments, extent, starts)
    volume = Volume(
        id=f"lvm:{group.name}/{lv.name}",
        partition=None,
        scheme=Scheme.LVM,
        offset=None,
        size=size,
        filesystem=FsType.UNKNOWN,
        type_id="+".join(sorted({_segment_type(segment) for segment in segments})) or None,
        type_name="LVM2 logical volume",
        name=str(lv.name),
        guid=str(lv.id),
        problem=problem,
    )
    if problem is not None:
        return Found(volume, None, Detection(FsType.UNKNOWN, problem=problem))
    return probe(volume, MappedSource(disk, pieces))


def _segment_type(segment: Any) -> str:
    """ "linear" for what LVM2 records as a striped segment of one stripe (every linear segment)."""
    if segment.type in _LINEAR and getattr(segment, "stripe_count", 1) == 1:
        return "linear"
    return str(segment.type)


def _pieces(
    disk: ByteSource, group: Any, segments: list[Any], extent: int, starts: dict[int, int]
) -> tuple[list[tuple[int, int]], str | None]:
    """Where the volume's extents are on the disk, in order; or why they cannot all be read."""
    pieces: list[tuple[int, int]] = []
    expected = 0
    for segment in segments:
        if _segment_type(segment) != "linear":
            kind = _segment_type(segment)
            return [], f"it is a {kind} logical volume; only linear logical volumes can be browsed"
        if segment.start_extent != expected:
            return [], "its segments leave a gap: the LVM2 metadata is damaged"
        pv_name, pv_extent = segment.stripes[0]
        pv = group.physical_volumes.get(pv_name)
        device = pv.dev if pv is not None else None
        if device is None or id(device) not in starts:
            pv_id = pv.id if pv is not None else pv_name
            return [], f"part of it is on physical volume {pv_id}, which is not on this disk"
        start = starts[id(device)] + int(pv.pe_start) * SECTOR + int(pv_extent) * extent
        length = int(segment.extent_count) * extent
        if start + length > disk.size:
            return [], "its extents lie beyond the end of the disk"
        pieces.append((start, length))
        expected += int(segment.extent_count)
    if not pieces:
        return [], "it has no extents"
    return pieces, None
