"""The service's file browser keeps disks open across requests; a point removed from the onsite
repository and kept offsite is looked for again there, not read from chunks GC may free."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from app.browse.service import FileBrowser
from app.chunkstore import FileReader, Repository, backup_disk, gc
from app.restore_points.models import RestorePoint
from tests.chunkstore.conftest import new_repo
from tests.files.images import Item, ext_image, tree

MIB = 1 << 20


def back_up(repo: Repository, image: Path, point_id: str) -> None:
    with FileReader(image) as reader:
        result = backup_disk(repo, reader, image.stat().st_size, workers=2)
    writer = repo.begin_restore_point(point_id, vm_config={})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
    writer.commit()


def copied_point(tmp_path: Path, items: list[Item]) -> tuple[Repository, RestorePoint, FileBrowser]:
    """An ext4 disk of ``items`` backed up as one point onsite and offsite, and a browser over both."""
    image = ext_image("ext4", items, tmp_path / "img", size=16 * MIB)
    onsite, offsite = new_repo(tmp_path / "onsite"), new_repo(tmp_path / "offsite")
    point_id = uuid.uuid4()
    for repo in (onsite, offsite):
        back_up(repo, image, str(point_id))
    point = RestorePoint(id=point_id, kind="image", disks=[{"key": 2000}], copy_status="offsite")
    return onsite, point, FileBrowser(lambda: onsite, open_offsite=lambda: offsite)


async def test_a_point_gone_from_onsite_is_read_from_its_offsite_copy(tmp_path: Path) -> None:
    items = tree(posix=True, big=False)
    onsite, point, browser = copied_point(tmp_path, items)
    point_id = str(point.id)
    assert (await browser.stat(point, 2000, "1", "/hello.txt")).size == 14

    # Onsite retention removes the point (the catalog keeps it: its copy is offsite) and GC frees
    # its chunks there.
    onsite.delete_restore_point(point_id)
    assert gc(onsite, grace=timedelta(0)).chunks_deleted > 0
    assert await browser.where(point) == "offsite"
    # A file not read before, so none of its chunks is in the open disk's memory cache.
    expected = next(i.data for i in items if i.path == "/data/random.bin")
    download = await browser.download(point, 2000, "1", "/data/random.bin")
    assert b"".join([piece async for piece in download.chunks]) == expected


async def test_a_point_whose_onsite_removal_is_committed_is_read_offsite(tmp_path: Path) -> None:
    """The pruner commits the removal, then deletes the manifest: a restore asked for in between
    must not choose onsite and then find nothing there."""
    onsite, point, browser = copied_point(tmp_path, tree(posix=True, big=False))
    point_id = str(point.id)
    assert await browser.where(point) == "onsite"
    point.onsite_removed_at = datetime.now(UTC)  # committed; the manifest is still there
    assert onsite.has_restore_point(point_id)
    assert await browser.where(point) == "offsite"
