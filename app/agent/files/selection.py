"""What a file restore delivers: the selected files and directories, walked, with archive names.

Selections come from the request (disk, volume, path); each is opened through ``app.files`` over the
restore point's disk (lazily: only the chunks holding the files are read). Directories expand to
everything below them, each directory before its contents; symbolic links are kept as links, never
followed; devices, FIFOs and sockets are skipped and reported.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from app.chunkstore import DiskImageReader, Repository, RestorePoint
from app.contracts.agent import FileSelection
from app.files import DiskBrowser, Entry, EntryType, Filesystem
from app.files.names import shown, unshown

#: Chunk cache per disk while a restore reads it (the file streams read ahead on top of it).
CACHE_BYTES = 32 << 20


@dataclass(frozen=True)
class Item:
    """One entry to deliver, with its name in the archive (or below the target directory)."""

    name: str  # relative, '/'-separated, never empty, never starting with '/'
    entry: Entry
    fs: Filesystem


class Selection:
    def __init__(self, repo: Repository, point: RestorePoint, files: list[FileSelection]) -> None:
        self.repo = repo
        self.point = point
        self.files = files
        self._browsers: dict[int, DiskBrowser] = {}
        # One volume: names are the paths themselves. Several: each under its own top directory.
        self.prefixed = len({(f.disk, f.volume) for f in files}) > 1
        self.skipped: list[str] = []

    def _fs(self, selection: FileSelection) -> Filesystem:
        browser = self._browsers.get(selection.disk)
        if browser is None:
            index = self.repo.read_index(self.point.disk(str(selection.disk)))
            browser = DiskBrowser(DiskImageReader(self.repo, index, cache_bytes=CACHE_BYTES))
            self._browsers[selection.disk] = browser
        return browser.filesystem(selection.volume)

    def _name(self, selection: FileSelection, path: str) -> str:
        relative = path.strip("/")
        if self.prefixed:
            top = f"disk{selection.disk}-{selection.volume}".replace("/", "_").replace(":", "_")
            return f"{top}/{relative}" if relative else top
        # The root of a volume selected alone has no name of its own: its entries are named
        # from it ("etc/hosts"), and a name such as "root" would be taken by /root.
        return relative

    def items(self) -> Iterator[Item]:
        seen: set[str] = set()
        for selection in self.files:
            fs = self._fs(selection)
            top = fs.stat(unshown(selection.path))  # as the API showed it (app.files.names)
            entries = _with_top(top, fs.walk(top.path)) if top.type is EntryType.DIR else iter((top,))
            for entry in entries:
                name = self._name(selection, entry.path)
                if not name:
                    continue  # the volume's root itself (see _name)
                if name in seen:
                    continue  # a path selected twice, or inside a selected directory
                seen.add(name)
                if entry.type is EntryType.OTHER:
                    self.skipped.append(f"{shown(entry.path)}: device, FIFO or socket, not restored")
                    continue
                yield Item(name, entry, fs)


def _with_top(top: Entry, below: Iterator[Entry]) -> Iterator[Entry]:
    yield top
    yield from below
