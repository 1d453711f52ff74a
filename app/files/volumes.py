"""The volumes of one disk: its partitions (GPT, MBR with extended and logical partitions, APM, BSD), or
the whole disk when it holds a filesystem without a partition table; LVM2 logical volumes are added by
``lvm.py``.

dissect.volume reads the tables. Two of its results are corrected here, because both would make a
filesystem read the wrong bytes:

* GPT partition sizes: dissect computes ``last_lba - first_lba`` sectors, but ``last_lba`` is inclusive,
  so the partition's last sector (where NTFS keeps its backup boot sector, and a filesystem its last
  block) would be cut off. The size is taken from the entry itself.
* MBR logical partitions: dissect numbers them after the slot of their extended partition (2, 3, …),
  colliding with primary partitions; they are numbered from 5 in chain order, as Linux and every
  partitioning tool do. Partitions of a BSD disklabel nested in an MBR partition are skipped (dissect
  gives their offsets relative to the wrong origin).

Hybrid MBRs on GPT disks list their partitions twice; only the GPT entries are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from app.files import _dissect as d
from app.files.detect import HEAD_BYTES, Detection, detect, spans_whole_disk
from app.files.models import FsType, Scheme, Volume
from app.files.source import ByteSource, SliceSource, SourceStream

log = logging.getLogger(__name__)

SECTOR = 512  # dissect.volume's default; VMware presents virtual disks with 512-byte sectors
_EXTENDED = (0x05, 0x0F, 0x85)
_GPT_UNUSED = UUID(int=0)


@dataclass(frozen=True, slots=True)
class Found:
    """A volume with what reads it (None when it cannot be read at all) and what detection said."""

    volume: Volume
    source: ByteSource | None
    detection: Detection


def probe(volume: Volume, source: ByteSource) -> Found:
    """``volume`` with the filesystem, label and problem that detection finds on ``source``."""
    detection = detect(SourceStream(source))
    probed = replace(volume, filesystem=detection.fstype, label=detection.label, problem=detection.problem)
    return Found(probed, source, detection)


def whole_disk(disk: ByteSource) -> Found:
    volume = Volume(
        id="1", partition=1, scheme=Scheme.NONE, offset=0, size=disk.size, filesystem=FsType.UNKNOWN
    )
    return probe(volume, disk)


def partitions(disk: ByteSource) -> list[Found]:
    """The disk's partitions, probed; the whole disk as one volume when it has no partition table."""
    stream = SourceStream(disk)
    head = stream.read_at(0, HEAD_BYTES)
    if spans_whole_disk(head):
        return [whole_disk(disk)]
    try:
        table = d.Disk(stream, sector_size=SECTOR)
    except Exception as exc:  # dissect found no table it knows: treat the disk as one volume
        log.debug("no partition table: %s", exc)
        return [whole_disk(disk)]
    scheme = _scheme(table.scheme)
    primaries = _primary_slots(table.scheme) if scheme is Scheme.MBR else {}
    logical = 4
    found: list[Found] = []
    for partition in table.partitions:
        if partition.disk.fh is not stream:
            log.info("skipping partition %s of a nested disklabel", partition.number)
            continue
        if scheme is Scheme.GPT:
            if not isinstance(partition.type, UUID):
                continue  # a hybrid MBR's copy of a GPT partition
            if partition.type == _GPT_UNUSED:
                continue
            offset = partition.raw.first_lba * SECTOR
            size = (partition.raw.last_lba - partition.raw.first_lba + 1) * SECTOR
            number = int(partition.number)
        elif scheme is Scheme.MBR:
            offset, size = int(partition.offset), int(partition.size)
            if offset in primaries:
                number = primaries[offset]
            else:
                logical += 1
                number = logical
        else:
            offset, size, number = int(partition.offset), int(partition.size), int(partition.number)
        found.append(_partition(disk, scheme, number, offset, size, partition))
    return sorted(found, key=lambda f: f.volume.partition or 0)


def _scheme(table: Any) -> Scheme:
    for kind, scheme in ((d.GPT, Scheme.GPT), (d.MBR, Scheme.MBR), (d.APM, Scheme.APM), (d.BSD, Scheme.BSD)):
        if isinstance(table, kind):
            return scheme
    return Scheme.NONE


def _primary_slots(mbr: Any) -> dict[int, int]:
    """Byte offset of each primary (not extended) partition of an MBR → its slot number, 1 to 4."""
    slots = {}
    for slot, entry in enumerate(mbr.mbr.part):
        if entry.type != 0 and entry.type not in _EXTENDED:
            slots[mbr.offset + entry.sector_ofs * SECTOR] = slot + 1
    return slots


def _partition(
    disk: ByteSource, scheme: Scheme, number: int, offset: int, size: int, partition: Any
) -> Found:
    kind = partition.type
    if isinstance(kind, UUID):
        type_id = str(kind)
        type_name = d.PARTITION_TYPES.get(kind)
    elif isinstance(kind, int):
        type_id = f"0x{kind:02x}"
        type_name = d.PARTITION_TYPES.get(kind)
    else:
        type_id, type_name = str(kind), None
    volume = Volume(
        id=str(number),
        partition=number,
        scheme=scheme,
        offset=offset,
        size=size,
        filesystem=FsType.UNKNOWN,
        type_id=type_id,
        type_name=type_name,
        name=partition.name or None,
        guid=str(partition.guid) if partition.guid else None,
    )
    if offset >= disk.size or size <= 0:
        problem = "the partition table places this partition outside the disk"
        return Found(replace(volume, problem=problem), None, Detection(FsType.UNKNOWN, problem=problem))
    return probe(volume, SliceSource(disk, offset, size))
