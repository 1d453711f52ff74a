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


async def test_names_that_are_not_utf8_are_shown_escaped_and_found_again(tmp_path: Path) -> None:
    """An ext4 name with a Latin-1 byte: the listing shows it as \\xNN (a JSON document cannot hold
    the byte), and that spelling finds the file again for stat, download and restore requests; a
    file restore's selection (the agent's side) finds it too, and a zip names it the same way."""
    from app.agent.files.selection import Selection
    from app.api.downloads import content_disposition
    from app.browse.schemas import FileListing
    from app.contracts.agent import FileSelection
    from app.files import EntryType
    from app.restores.schemas import FileRef
    from tests.files.images import run, truncate, write_tree

    raw = b"caf\xe9 \\ menu.txt".decode("utf-8", "surrogateescape")
    items = [Item("/hello.txt", EntryType.FILE, b"hello\n"), Item(f"/{raw}", EntryType.FILE, b"latin-1\n")]
    src = write_tree(items, tmp_path / "src")
    image = truncate(tmp_path / "odd.img", 16 * MIB)
    run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", src, image])
    repo = new_repo(tmp_path / "repo")
    point_id = uuid.uuid4()
    back_up(repo, image, str(point_id))
    point = RestorePoint(id=point_id, kind="image", disks=[{"key": 2000}], copy_status="none")
    browser = FileBrowser(lambda: repo)

    listing = await browser.list_dir(point, 2000, "1", "/", None, 100)
    shown_name = "caf\\xe9 \\\\ menu.txt"
    odd = next(e for e in listing.items if e.path != "/hello.txt" and e.type == "file")
    assert (odd.name, odd.path) == (shown_name, f"/{shown_name}")
    FileListing.model_validate_json(listing.model_dump_json())  # JSON holds it
    # Paging one entry at a time: the shown name works as a cursor too.
    names, cursor = [], None
    while True:
        page = await browser.list_dir(point, 2000, "1", "/", cursor, 1)
        names += [e.name for e in page.items]
        if (cursor := page.next_cursor) is None:
            break
    assert names == [e.name for e in listing.items]
    assert (await browser.stat(point, 2000, "1", odd.path)).size == len(b"latin-1\n")
    download = await browser.download(point, 2000, "1", odd.path)
    assert b"".join([piece async for piece in download.chunks]) == b"latin-1\n"
    assert "caf%5Cxe9" in content_disposition(download.entry.name)  # no longer a 500
    assert await browser.check(point, [FileRef(disk=2000, volume="1", path=odd.path)]) == [odd.path]

    manifest = repo.read_restore_point(str(point_id))
    selection = Selection(repo, manifest, [FileSelection(disk=2000, volume="1", path=odd.path)])
    (item,) = list(selection.items())
    assert item.name == raw  # the bytes themselves, as tar keeps them
