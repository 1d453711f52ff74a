"""One browsable filesystem: list, stat, open and walk by path, safely from many threads.

``Filesystem`` is the handle ``DiskBrowser.filesystem()`` returns. It owns a driver (see ``drivers/``)
and the lock that guards it: dissect objects read through one shared stream and cache as they go, so every
call into the driver holds the lock, and only plain data (``Entry``, ``DirectoryPage``, ``Layout``) comes
out. Files handed out (``FileStream``) read the volume directly and never take the lock (except NTFS
compressed files, whose decompression is dissect's).

Paths are checked and normalised first (``paths.split``), then resolved one name at a time from the root,
never following symbolic links: a link in the middle of a path is an error that names it. Listings are
sorted and paged by ``listing.Listing``; the last directories listed are kept (bounded by entry count) so
that paging through a large directory does not read it again for every page.

Every parser failure becomes ``CorruptFilesystem`` with what was being done, a failure of the source (the
repository) comes out as the source's own error (``errors.translate``).
"""

from __future__ import annotations

import builtins
import threading
from collections import OrderedDict
from collections.abc import Iterator

from app.files.drivers.base import Driver, Node
from app.files.errors import CorruptFilesystem, IsADirectory, NotADirectory, NotAFile, PathNotFound, translate
from app.files.filestream import FileStream
from app.files.listing import DEFAULT_LIMIT, Listing, sort_key
from app.files.models import DirectoryPage, Entry, EntryType, FsType, Volume
from app.files.paths import child, join, split

CACHE_ENTRIES = 200_000  # entries of recently listed directories kept, across directories
CACHE_DIRECTORIES = 64


class Filesystem:
    """A filesystem on ``volume``, opened. All methods are thread-safe."""

    def __init__(self, volume: Volume, driver: Driver, lock: threading.RLock) -> None:
        self.volume = volume
        self._driver = driver
        self._lock = lock
        self._listings: OrderedDict[str, Listing] = OrderedDict()
        self._cached = 0

    @property
    def fstype(self) -> FsType:
        return self._driver.fstype

    @property
    def label(self) -> str | None:
        return self._driver.label

    def __repr__(self) -> str:
        return f"<Filesystem {self.fstype.value} on volume {self.volume.id}>"

    def _context(self, action: str, path: str) -> str:
        return f"{action} '{path}' on volume {self.volume.id} ({self.fstype.value})"

    # -- public API --------------------------------------------------------------------------------

    def list(
        self, path: str = "/", *, cursor: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> DirectoryPage:
        """One page of directory ``path``, in name order (see ``DirectoryPage``)."""
        names = split(path)
        normalized = join(names)
        with self._lock:
            listing = self._listings.get(normalized)
            if listing is not None:
                self._listings.move_to_end(normalized)
            else:
                with translate(self._context("listing", normalized)):
                    node = self._resolve(names)
                    self._require_directory(node, normalized)
                    listing = Listing.of(normalized, (entry for entry, _ in self._children(node, normalized)))
                self._remember(listing)
        return listing.page(cursor, limit)

    def stat(self, path: str) -> Entry:
        """What the listing of its directory says about ``path`` (the link itself for symbolic links)."""
        names = split(path)
        normalized = join(names)
        with self._lock, translate(self._context("looking up", normalized)):
            node = self._resolve(names)
            return self._driver.entry(node, names[-1] if names else "", normalized)

    def open(self, path: str) -> FileStream:
        """The regular file at ``path`` as a read-only, seekable binary file object with ``size``."""
        names = split(path)
        normalized = join(names)
        with self._lock, translate(self._context("opening", normalized)):
            node = self._resolve(names)
            kind = self._driver.kind(node)
            if kind is EntryType.DIR:
                raise IsADirectory(f"'{normalized}' is a directory: list it, or download it as an archive")
            if kind is EntryType.SYMLINK:
                target = self._driver.entry(node, names[-1], normalized).symlink_target
                raise NotAFile(
                    f"'{normalized}' is a symbolic link to '{target}'; links are not followed, "
                    "open the target's path instead"
                )
            if kind is not EntryType.FILE:
                raise NotAFile(f"'{normalized}' is a device, FIFO or socket: it has no content to read")
            layout = self._driver.layout(node, normalized)
        return FileStream(layout, normalized)

    def walk(self, path: str = "/") -> Iterator[Entry]:
        """Every entry below directory ``path``, depth first, each directory before its contents.

        Entries come in listing order within a directory. Symbolic links are yielded, never followed. The
        lock is held only while a directory is read, not while the caller works between entries.
        """
        names = split(path)
        normalized = join(names)
        with self._lock, translate(self._context("walking", normalized)):
            node = self._resolve(names)
            self._require_directory(node, normalized)
            seen = {self._driver.key(node)}
            first = self._sorted_children(node, normalized)
        stack: builtins.list[Iterator[tuple[Entry, Node]]] = [iter(first)]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            entry, node = item
            yield entry
            if entry.type is EntryType.DIR:
                with self._lock, translate(self._context("walking", entry.path)):
                    key = self._driver.key(node)
                    if key in seen:
                        raise CorruptFilesystem(
                            f"'{entry.path}' leads back to a directory already walked: "
                            "the directory tree is damaged"
                        )
                    seen.add(key)
                    stack.append(iter(self._sorted_children(node, entry.path)))

    # -- resolution ----------------------------------------------------------------------------------

    def _resolve(self, names: tuple[str, ...]) -> Node:
        """The node at ``names`` (under the lock); names the first part of the path that is wrong."""
        node = self._driver.root()
        for depth, name in enumerate(names):
            here = join(names[:depth])
            kind = self._driver.kind(node)
            if kind is EntryType.SYMLINK:
                target = self._driver.entry(node, names[depth - 1], here).symlink_target
                raise NotADirectory(
                    f"'{here}' is a symbolic link to '{target}'; "
                    "links are not followed, use the target's path"
                )
            if kind is not EntryType.DIR:
                raise NotADirectory(f"'{here}' is a file, not a directory, so '{join(names)}' cannot exist")
            found = self._driver.find(node, name)
            if found is None:
                there = join(names[: depth + 1])
                if depth + 1 == len(names):
                    raise PathNotFound(f"'{there}' does not exist")
                raise PathNotFound(f"'{there}' does not exist, so '{join(names)}' does not either")
            node = found
        return node

    def _require_directory(self, node: Node, path: str) -> None:
        kind = self._driver.kind(node)
        if kind is EntryType.FILE:
            raise NotADirectory(f"'{path}' is a file, not a directory: open it to read it")
        if kind is EntryType.SYMLINK:
            raise NotADirectory(
                f"'{path}' is a symbolic link; links are not followed, list the target's path"
            )
        if kind is not EntryType.DIR:
            raise NotADirectory(f"'{path}' is a device, FIFO or socket, not a directory")

    def _children(self, node: Node, path: str) -> Iterator[tuple[Entry, Node]]:
        for name, found in self._driver.children(node):
            yield self._driver.entry(found, name, child(path, name)), found

    def _sorted_children(self, node: Node, path: str) -> builtins.list[tuple[Entry, Node]]:
        return sorted(self._children(node, path), key=lambda item: sort_key(item[0].name))

    def _remember(self, listing: Listing) -> None:
        if len(listing.entries) > CACHE_ENTRIES:
            return
        self._listings[listing.path] = listing
        self._cached += len(listing.entries)
        while self._cached > CACHE_ENTRIES or len(self._listings) > CACHE_DIRECTORIES:
            _, evicted = self._listings.popitem(last=False)
            self._cached -= len(evicted.entries)
