"""File-level restore end to end: a real disk layout (GPT with ext4, XFS, NTFS and FAT32 made by the real
tools) on a simulated VM's disk, backed up through a real proxy process, then browsed, downloaded file
by file and restored as tar and zip archives through the service's API; contents compared byte for byte.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import vim

from app.files import EntryType
from tests.e2e.stack import Stack
from tests.files.disks import GPT_BASIC_DATA, GPT_LINUX, Part, partitioned_disk
from tests.files.images import Item, MiB, ext_image, fat_image, ntfs_image, tree, xfs_image
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference
from tests.vadp.disks import disk_of, flat_name, grow_disk, put_file

pytestmark = pytest.mark.vcsim

VM = "DC0_H0_VM0"
DISK_SIZE = 420 * MiB  # mkfs.xfs wants 300 MiB at least


@pytest.fixture
def stack(tmp_path: Path, vcsim_factory: VcsimFactory) -> Iterator[Stack]:
    deployment = Stack(tmp_path, vcsim_factory())
    try:
        yield deployment.start()
    finally:
        deployment.stop()


def layout(work: Path) -> tuple[Path, dict[str, list[Item]]]:
    """A GPT disk: 1 ext4, 2 XFS, 3 NTFS, 4 FAT32, each holding the file tree its tools can write."""
    trees = {
        "1": tree(posix=True),
        "2": tree(posix=True, spaces=False),  # mkfs.xfs protofiles cannot name files with spaces
        "3": tree(posix=False),
        "4": tree(posix=False, astral=False),
    }
    images = {
        "1": ext_image("ext4", trees["1"], work, size=32 * MiB),
        "2": xfs_image(trees["2"], work),
        "3": ntfs_image(trees["3"], work, size=32 * MiB),
        "4": fat_image(32, trees["4"], work, size=40 * MiB),
    }
    sizes = {key: image.stat().st_size for key, image in images.items()}
    disk = work / "disk.img"
    partitioned_disk(
        disk,
        "gpt",
        [
            Part(sizes["1"], GPT_LINUX, images["1"], "root"),
            Part(sizes["2"], GPT_LINUX, images["2"], "srv"),
            Part(sizes["3"], GPT_BASIC_DATA, images["3"], "win"),
            Part(sizes["4"], GPT_BASIC_DATA, images["4"], "efi"),
        ],
        size=DISK_SIZE,
    )
    return disk, trees


def put_disk(stack: Stack, image: Path) -> None:
    with reference.session(stack.vcsim) as si:
        vm = reference.find(si, vim.VirtualMachine, VM)
        disk = disk_of(si, vm, None)
        grow_disk(si, vm, disk, DISK_SIZE)
        datacenter = reference.datacenter_of(si, vm)
        name = flat_name(disk.backing.fileName)
    assert datacenter is not None
    put_file(stack.vcsim, datacenter, name, image.read_bytes())


def listing(stack: Stack, base: str, **params: Any) -> dict[str, Any]:
    assert stack.api is not None
    response = stack.api.get(f"{base}/files", params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def files_of(items: list[Item]) -> dict[str, bytes]:
    return {i.path: i.data for i in items if i.kind is EntryType.FILE}


def test_browse_download_and_restore_files_out_of_an_image_backup(stack: Stack) -> None:
    image, trees = layout(stack.workdir / "images")
    put_disk(stack, image)
    job = stack.wait_job(stack.backup(VM)["id"], timeout_s=300)
    assert job["state"] == "succeeded", job
    point_id = job["result"]["restore_point_id"]
    base = f"/restore-points/{point_id}"

    (disk,) = stack.get(f"{base}/volumes")
    assert disk["error"] is None
    found = {v["id"]: v for v in disk["volumes"]}
    assert [found[k]["filesystem"] for k in ("1", "2", "3", "4")] == ["ext4", "xfs", "ntfs", "fat32"]
    assert all(found[k]["browsable"] for k in ("1", "2", "3", "4"))
    key = disk["disk"]

    # Each filesystem's root lists what its tools put there (NTFS hides its metadata files).
    for volume, items in trees.items():
        root = listing(stack, base, disk=key, partition=volume, path="/", limit=1000)
        top = {i.path.split("/")[1] for i in items}
        names = {e["name"] for e in root["items"]} - {"lost+found"}
        assert names == top, (volume, names ^ top)
        assert root["next_cursor"] is None and root["total"] == len(root["items"])

    # Paging through a large directory gives every entry once, in order.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"disk": key, "partition": "2", "path": "/many", "limit": 40}
        if cursor:
            params["cursor"] = cursor
        page = listing(stack, base, **params)
        seen += [e["name"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, key=str.casefold) and len(seen) == 150

    # Single files straight out of the backup.
    assert stack.api is not None
    for volume, path in (("1", "/data/random.bin"), ("3", "/Grüße/日本語.txt"), ("4", "/data/sparse.bin")):
        response = stack.api.get(
            f"{base}/files/content", params={"disk": key, "partition": volume, "path": path}
        )
        assert response.status_code == 200, response.text
        assert response.content == files_of(trees[volume])[path]
        assert int(response.headers["content-length"]) == len(response.content)
        assert "attachment" in response.headers["content-disposition"]

    # Clear 4xx for what cannot be, and nothing is recorded for a bad restore request.
    for params, status in (
        ({"partition": "1", "path": "/../../etc/passwd"}, 422),
        ({"partition": "1", "path": "/nope"}, 404),
        ({"partition": "1", "path": "/" + "x" * 5000}, 422),
        ({"partition": "9", "path": "/"}, 404),
        ({"partition": "1", "path": "/hello.txt"}, 422),  # listing a file
    ):
        response = stack.api.get(f"{base}/files", params={"disk": key, **params})
        assert response.status_code == status, (params, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    restores_before = stack.get("/restores")["total"]
    bad = stack.api.post(
        "/restores",
        json={
            "restore_point_id": point_id,
            "type": "files",
            "files": [{"disk": key, "volume": "1", "path": "/data/missing.bin"}],
        },
    )
    assert bad.status_code == 404 and "missing.bin" in bad.json()["detail"], bad.text
    assert stack.get("/restores")["total"] == restores_before

    # A file restore as a tar archive: a directory of one filesystem and a file of another.
    requested = stack.post(
        "/restores",
        {
            "restore_point_id": point_id,
            "type": "files",
            "files": [
                {"disk": key, "volume": "1", "path": "/data"},
                {"disk": key, "volume": "3", "path": "/Grüße/日本語.txt"},
            ],
        },
    )
    assert requested["type"] == "files" and requested["target"] == "archive"
    done = stack.wait_restore(requested["id"], timeout_s=180)
    assert done["state"] == "succeeded", (done, stack.log("proxy.log"))
    assert done["initiated_at"] and done["completed_at"] and done["download_url"]
    archive = stack.api.get(done["download_url"].removeprefix("/api/v1"))
    assert archive.status_code == 200
    assert len(archive.content) == done["result"]["archive_size"]
    import hashlib

    assert hashlib.sha256(archive.content).hexdigest() == done["result"]["archive_sha256"]
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        members = {m.name: m for m in tar.getmembers()}
        got = {name: tar.extractfile(m).read() for name, m in members.items() if m.isfile()}  # type: ignore[union-attr]
    ext_files = files_of(trees["1"])
    expected = {f"disk{key}-1/{p.lstrip('/')}": d for p, d in ext_files.items() if p.startswith("/data/")}
    expected[f"disk{key}-3/Grüße/日本語.txt"] = files_of(trees["3"])["/Grüße/日本語.txt"]
    assert got == expected
    assert members[f"disk{key}-1/data"].isdir()

    # The same as zip, from XFS, with modes and symbolic links kept.
    requested = stack.post(
        "/restores",
        {
            "restore_point_id": point_id,
            "type": "files",
            "format": "zip",
            "files": [
                {"disk": key, "volume": "2", "path": "/perm"},
                {"disk": key, "volume": "2", "path": "/links"},
            ],
        },
    )
    done = stack.wait_restore(requested["id"], timeout_s=180)
    assert done["state"] == "succeeded", done
    archive = stack.api.get(f"/restores/{requested['id']}/archive")
    assert archive.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(archive.content)) as zipped:
        assert zipped.read("perm/secret") == b"top secret\n"
        assert (zipped.getinfo("perm/script.sh").external_attr >> 16) & 0o777 == 0o755
        assert zipped.read("links/to-hello") == b"../hello.txt"  # a link's target, as zip tools store it
        assert zipped.testzip() is None
