"""Whole disks for the file-browsing tests: partition tables and LVM2, around the filesystem images.

* Partition tables: ``sfdisk`` on the disk file, filesystems copied in with ``dd``.
* LVM2: ``pvcreate``/``vgcreate``/``lvcreate`` on a loop device over an image file (so root and working
  loop devices are needed), never activated (``--driverloaded n``, no auto-activation): no device-mapper
  is needed and nothing stays behind; the filesystems are then written into the logical volumes' extents.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.files.images import SECTOR, MiB, require, run, truncate

# -- partitioned disks -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    size: int
    type: str  # GPT type GUID or MBR type in hex ("83"); "5" makes the MBR extended partition
    image: Path | None = None
    name: str = ""
    logical: Sequence[Part] = field(default_factory=tuple)  # inside an MBR extended partition


GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"
GPT_LVM = "E6D6D379-F507-44C2-A23C-238F2A3DF928"


def partitioned_disk(
    path: Path, label: str, parts: Sequence[Part], size: int | None = None
) -> dict[int, int]:
    """A disk with a ``label`` ("gpt" or "dos") table of ``parts``, each image copied in; returns the
    byte offset of each partition by number (MBR logical partitions from 5)."""
    lines = [f"label: {label}", "unit: sectors", ""]
    offsets: dict[int, int] = {}
    start = MiB
    primary, logical_number = 0, 4
    copies: list[tuple[Path, int]] = []
    for part in parts:
        primary += 1
        if part.logical:
            inner = start
            total = sum(MiB + p.size for p in part.logical)
            lines.append(f"start={start // SECTOR}, size={total // SECTOR}, type=5")
            for child in part.logical:
                inner += MiB  # room for the extended boot record
                logical_number += 1
                lines.append(f"start={inner // SECTOR}, size={child.size // SECTOR}, type={child.type}")
                offsets[logical_number] = inner
                if child.image is not None:
                    copies.append((child.image, inner))
                inner += child.size
            start += total
            continue
        name = f', name="{part.name}"' if part.name else ""
        lines.append(f"start={start // SECTOR}, size={part.size // SECTOR}, type={part.type}{name}")
        offsets[primary] = start
        if part.image is not None:
            copies.append((part.image, start))
        start += part.size
    truncate(path, size or start + MiB)
    run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", path], stdin="\n".join(lines) + "\n")
    for image, offset in copies:
        run(
            [
                "dd",
                f"if={image}",
                f"of={path}",
                "bs=1M",
                f"seek={offset // MiB}",
                "conv=notrunc,sparse",
                "status=none",
            ]
        )
    return offsets


# -- LVM2 -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogicalVolumes:
    """A physical volume image and where each logical volume's segments are in it."""

    image: Path
    group: str
    segments: dict[str, list[tuple[int, int]]]  # LV name → [(byte offset in the PV, length)]


def lvm_physical_volume(work: Path, sizes: dict[str, list[int]], size: int = 40 * MiB) -> LogicalVolumes:
    """A PV image holding one volume group whose LVs get the given segment sizes (one lvcreate/lvextend per
    size, in turn, so that an LV with several sizes is split around the others)."""
    if os.geteuid() != 0:
        pytest.fail("the LVM2 test images need root (losetup and LVM2 work on loop devices)")
    require("losetup")
    require("lvm")
    image = truncate(work / "pv.img", size)
    group = "vmrtest" + uuid.uuid4().hex[:8]
    try:
        device = run(["losetup", "--find", "--show", image]).strip()
    except AssertionError as exc:
        pytest.fail(f"the LVM2 test images need a loop device, and none could be set up: {exc}")
    config = (
        'devices { obtain_device_list_from_udev=0 use_devicesfile=0 filter=["a|^' + device + '$|","r|.*|"] } '
        "activation { udev_sync=0 udev_rules=0 } backup { backup=0 archive=0 }"
    )
    env = {"LVM_SUPPRESS_FD_WARNINGS": "1"}
    common = ["--config", config]
    offline = ["--driverloaded", "n", *common]
    try:
        run(["lvm", "pvcreate", "-q", *common, device], env=env)
        # never activated, by us (--driverloaded n below) or by udev rules reacting to the new PV
        run(
            ["lvm", "vgcreate", "-q", *common, "--setautoactivation", "n", "-s", "1m", group, device], env=env
        )
        rounds = max(len(v) for v in sizes.values())
        for index in range(rounds):
            for lv, parts in sizes.items():
                if index < len(parts):
                    megs = f"{parts[index] // MiB}m"
                    if index == 0:
                        run(
                            [
                                "lvm",
                                "lvcreate",
                                "-q",
                                *offline,
                                "-an",
                                "-Zn",
                                "-Wn",
                                "-L",
                                megs,
                                "-n",
                                lv,
                                group,
                            ],
                            env=env,
                        )
                    else:
                        run(["lvm", "lvextend", "-q", *offline, "-L", f"+{megs}", f"{group}/{lv}"], env=env)
        report = json.loads(
            run(
                [
                    "lvm",
                    "lvs",
                    *common,
                    "--reportformat",
                    "json",
                    "--segments",
                    "--units",
                    "b",
                    "-o",
                    "lv_name,seg_start_pe,seg_pe_ranges,vg_extent_size",
                ],
                env=env,
            )
        )
        pe_start = int(
            json.loads(
                run(
                    ["lvm", "pvs", *common, "--reportformat", "json", "--units", "b", "-o", "pe_start"],
                    env=env,
                )
            )["report"][0]["pv"][0]["pe_start"].rstrip("B")
        )
    finally:
        subprocess.run([require("losetup"), "-d", device], check=False)
    segments: dict[str, list[tuple[int, int]]] = {}
    for row in sorted(report["report"][0]["seg"], key=lambda r: (r["lv_name"], int(r["seg_start_pe"]))):
        extent = int(row["vg_extent_size"].rstrip("B"))
        first, last = (int(n) for n in row["seg_pe_ranges"].rsplit(":", 1)[1].split("-"))
        segments.setdefault(row["lv_name"], []).append(
            (pe_start + first * extent, (last - first + 1) * extent)
        )
    return LogicalVolumes(image, group, segments)


def write_into(image: Path, target: Path, segments: Sequence[tuple[int, int]]) -> None:
    """Copy ``image`` into ``target`` across ``segments`` (a logical volume's extents), in order."""
    with open(image, "rb") as source, open(target, "r+b") as out:
        for offset, length in segments:
            out.seek(offset)
            out.write(source.read(length))
        assert source.read(1) == b"", f"{image} is larger than the logical volume"
