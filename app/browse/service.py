"""File-level browsing of image restore points, and downloads of files and restore archives.

This is the one place where the control plane reads backup *data*: browsing reads kilobytes (a
partition table, a superblock, a directory), which does not justify a round trip through a proxy
for every click, and a single-file download streams through the replica that serves it. Whole
file restores (many files, an archive or a push into the VM) are jobs run by proxies like any
restore, with their SLA clocks.

Opened disks are kept in a small LRU per process (``max_open`` disks, each with its own bounded
chunk cache), so paging through a directory does not reopen the filesystem. Every blocking call
runs in a thread; the chunkstore verifies every chunk it reads.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from app.browse.errors import as_domain_errors
from app.browse.schemas import DiskVolumes, FileEntry, FileListing, VolumeRead
from app.chunkstore import (
    ChunkstoreError,
    DiskImageReader,
    Repository,
    RepositoryNotFound,
    RestorePointNotFound,
)
from app.chunkstore import RestorePoint as RestorePointManifest
from app.chunkstore.streamread import StreamReader
from app.errors import InvalidInput, NotFound
from app.files import DiskBrowser, Entry, EntryType, FilesError, FileStream, paths
from app.files.names import shown, unshown
from app.restore_points.models import RestorePoint
from app.restores.schemas import FileRef

#: Disks kept open per process, and the chunk cache of each (listing needs a few chunks).
MAX_OPEN_DISKS = 8
CACHE_BYTES_PER_DISK = 16 << 20
#: Pieces of a download (the file stream reads ahead underneath).
DOWNLOAD_PIECE = 1 << 20


@dataclass(frozen=True)
class FileDownload:
    entry: Entry
    chunks: AsyncIterator[bytes]


def entry_read(entry: Entry) -> FileEntry:
    """What the API shows of an entry: names as ``app.files.names`` shows them."""
    return FileEntry(
        path=shown(entry.path),
        name=shown(entry.name),
        type=entry.type.value,
        size=entry.size,
        mtime=entry.mtime,
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        owner=entry.owner,
        attributes=entry.attributes,
        symlink_target=None if entry.symlink_target is None else shown(entry.symlink_target),
    )


class FileBrowser:
    """Process-wide: shared by every request of a replica."""

    def __init__(
        self,
        open_repository: Callable[[], Repository],
        max_open: int = MAX_OPEN_DISKS,
        open_offsite: Callable[[], Repository] | None = None,
    ) -> None:
        self._open_repository = open_repository
        self._open_offsite = open_offsite
        self._max_open = max_open
        self._lock = threading.Lock()
        # Each open disk with the repository it reads: a point removed from the onsite repository
        # (kept offsite) must be looked for again, not read from chunks GC may have freed.
        self._disks: OrderedDict[tuple[str, int], tuple[DiskBrowser, Repository]] = OrderedDict()

    # -- disks -------------------------------------------------------------------------------------

    @staticmethod
    def _check_point(point: RestorePoint) -> None:
        if point.kind != "image":
            raise InvalidInput(
                f"Restore point {point.id} holds databases and file sets, not disks; restore them with "
                "POST /restores (type 'application').",
                field=["path", "restore_point_id"],
            )

    @staticmethod
    def _disk_record(point: RestorePoint, disk: int) -> dict[str, object]:
        for record in point.disks:
            if int(record["key"]) == disk:
                return record
        keys = ", ".join(str(d["key"]) for d in point.disks) or "none"
        raise NotFound(f"Restore point {point.id} has no disk {disk}; its disks are: {keys}.")

    def _browser(self, point: RestorePoint, disk: int) -> DiskBrowser:
        key = (str(point.id), disk)
        with self._lock:
            cached = self._disks.get(key)
            if cached is not None:
                self._disks.move_to_end(key)
        if cached is not None:
            browser, source = cached
            if source.has_restore_point(str(point.id)):  # one stat: still where it was opened
                return browser
            self.forget(str(point.id))
        repo, manifest = self._locate(str(point.id))
        index = repo.read_index(manifest.disk(str(disk)))
        browser = DiskBrowser(DiskImageReader(repo, index, cache_bytes=CACHE_BYTES_PER_DISK))
        with self._lock:
            self._disks[key] = (browser, repo)
            self._disks.move_to_end(key)
            while len(self._disks) > self._max_open:
                self._disks.popitem(last=False)
        return browser

    def _locate(self, point_id: str) -> tuple[Repository, RestorePointManifest]:
        """The repository holding the point: onsite when it is there, else its offsite copy."""
        try:
            repo = self._open_repository()
            return repo, repo.read_restore_point(point_id)
        except (RestorePointNotFound, RepositoryNotFound):
            if self._open_offsite is None:
                raise
        repo = self._open_offsite()
        return repo, repo.read_restore_point(point_id)

    async def where(self, point: RestorePoint) -> str:
        """Where a restore reads the point from: ``onsite`` while its manifest is there (the faster
        copy), else ``offsite`` when its copy is complete; ``missing`` when neither holds it."""

        def run() -> str:
            try:
                # A point whose onsite removal is committed is not chosen even while its manifest
                # is still there: the pruner deletes it right after its commit.
                if point.onsite_removed_at is None and self._open_repository().has_restore_point(
                    str(point.id)
                ):
                    return "onsite"
            except RepositoryNotFound:
                pass  # the onsite repository itself is gone: the offsite copy is what is left
            offsite = self._open_offsite
            if (
                point.copy_status == "offsite"
                and offsite is not None
                and offsite().has_restore_point(str(point.id))
            ):
                return "offsite"
            return "missing"

        return await asyncio.to_thread(run)

    def forget(self, point_id: str) -> None:
        """Drop the open disks of a point (pruned: its chunks may go)."""
        with self._lock:
            for key in [k for k in self._disks if k[0] == point_id]:
                del self._disks[key]

    # -- API -------------------------------------------------------------------------------------------

    async def volumes(self, point: RestorePoint) -> list[DiskVolumes]:
        self._check_point(point)

        def run() -> list[DiskVolumes]:
            out = []
            for record in point.disks:
                key = int(record["key"])
                disk = DiskVolumes(
                    disk=key, label=str(record.get("label", "")), size=int(record["size"]), volumes=[]
                )
                try:
                    for v in self._browser(point, key).volumes():
                        disk.volumes.append(
                            VolumeRead(
                                id=v.id,
                                partition=v.partition,
                                scheme=v.scheme.value,
                                offset=v.offset,
                                size=v.size,
                                filesystem=v.filesystem.value,
                                browsable=v.filesystem.browsable and not v.problem,
                                label=None if v.label is None else shown(v.label),
                                type_name=v.type_name,
                                name=None if v.name is None else shown(v.name),
                                problem=v.problem,
                            )
                        )
                except (FilesError, ChunkstoreError) as exc:
                    disk.error = str(exc)
                out.append(disk)
            return out

        return await asyncio.to_thread(run)

    async def list_dir(
        self, point: RestorePoint, disk: int, partition: str, path: str, cursor: str | None, limit: int
    ) -> FileListing:
        self._check_point(point)
        self._disk_record(point, disk)

        def run() -> FileListing:
            with as_domain_errors(["query", "path"]):
                fs = self._browser(point, disk).filesystem(partition)
                page = fs.list(unshown(path), cursor=None if cursor is None else unshown(cursor), limit=limit)
            return FileListing(
                disk=disk,
                partition=partition,
                path=shown(page.path),
                items=[entry_read(e) for e in page.entries],
                total=page.total,
                next_cursor=None if page.next_cursor is None else shown(page.next_cursor),
            )

        return await asyncio.to_thread(run)

    async def stat(self, point: RestorePoint, disk: int, partition: str, path: str) -> Entry:
        self._check_point(point)
        self._disk_record(point, disk)

        def run() -> Entry:
            with as_domain_errors(["query", "path"]):
                return self._browser(point, disk).filesystem(partition).stat(unshown(path))

        return await asyncio.to_thread(run)

    async def download(self, point: RestorePoint, disk: int, partition: str, path: str) -> FileDownload:
        """One file's content, streamed; errors found before the first byte are 4xx, a damaged chunk
        found later ends the stream early (the client sees a short body against Content-Length)."""
        self._check_point(point)
        self._disk_record(point, disk)

        def open_file() -> tuple[Entry, FileStream]:
            with as_domain_errors(["query", "path"]):
                fs = self._browser(point, disk).filesystem(partition)
                entry = fs.stat(unshown(path))
                return entry, fs.open(unshown(path))

        entry, stream = await asyncio.to_thread(open_file)
        return FileDownload(entry, _pieces(lambda: stream.read(DOWNLOAD_PIECE), stream.close))

    async def check(self, point: RestorePoint, files: list[FileRef]) -> list[str]:
        """FileChecker for file restore requests: every path must exist (files or directories)."""
        self._check_point(point)
        normalized: list[str] = []
        for index, ref in enumerate(files):
            disk, partition, path = ref.disk, ref.volume, ref.path
            self._disk_record(point, disk)

            def run(disk: int = disk, partition: str = partition, path: str = path, at: int = index) -> Entry:
                with as_domain_errors(["body", "files", at, "path"]):
                    return self._browser(point, disk).filesystem(partition).stat(unshown(path))

            entry = await asyncio.to_thread(run)
            if entry.type is EntryType.OTHER:
                raise InvalidInput(
                    f"'{shown(entry.path)}' is a device, FIFO or socket: there is nothing to restore",
                    field=["body", "files", index, "path"],
                )
            # Kept in the job as shown (JSON and the catalog hold only valid Unicode); the agent
            # unshows it again.
            normalized.append(shown(paths.normalize(unshown(path))))
        return normalized

    async def export_stream(self, export_id: str, name: str) -> tuple[int, AsyncIterator[bytes]]:
        """A restore archive kept in the repository: its size and its verified bytes."""

        def open_reader() -> StreamReader:
            repo = self._open_repository()
            try:
                return StreamReader(repo, repo.read_export(export_id), name)
            except ChunkstoreError as exc:
                raise NotFound(f"The archive of this restore is no longer available ({exc}).") from exc

        reader = await asyncio.to_thread(open_reader)
        return reader.size, _pieces(lambda: reader.read(DOWNLOAD_PIECE), reader.close)


async def _pieces(read: Callable[[], bytes], close: Callable[[], None]) -> AsyncIterator[bytes]:
    """Blocking reads in a thread, one piece at a time; the source is closed however it ends."""
    try:
        while True:
            piece = await asyncio.to_thread(read)
            if not piece:
                return
            yield piece
    finally:
        await asyncio.to_thread(close)
