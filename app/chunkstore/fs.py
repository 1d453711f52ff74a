"""Local filesystem backend.

A key maps to a file below the root (``chunks/ab/<id>`` → ``<root>/chunks/ab/<id>``). Writes go to a
temporary file in the destination directory, are fsynced and renamed over the final name, and the
directory is fsynced so the rename survives a power cut: a chunk that a manifest refers to is durable
before the manifest is written (the manifest is written last, through the same path).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from app.chunkstore.backend import BytesLike, ObjectStat, validate_key
from app.chunkstore.errors import ObjectMissing

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
#: Where a sweep moves an object while it checks that no touch reached it (see delete_if_older).
_SWEEP_PREFIX = ".gc-"
#: A sweep decides within microseconds: an object aside for longer was left by one that stopped
#: (one aside for less belongs to a collection running now, which puts it back or removes it).
SWEEP_SETTLED_S = 60.0


class FsBackend:
    """Backend on a local (or mounted) filesystem directory."""

    def __init__(self, root: str | os.PathLike[str], *, durable: bool = True) -> None:
        # durable=False skips the fsyncs; only for throwaway repositories (tests), never for backups.
        self.root = Path(root)
        self._durable = durable
        self._made_dirs: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FsBackend({str(self.root)!r})"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, validate_key(key))

    def _ensure_dir(self, directory: str) -> None:
        # Creating fan-out directories once per process keeps the per-chunk cost to open+write+rename.
        if directory in self._made_dirs:
            return
        created = []
        path = directory
        while not os.path.isdir(path):
            created.append(path)
            path = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        if self._durable:
            # A new directory's own entry lives in its parent: fsync that too, or a power cut
            # could keep a manifest while losing the directory of the objects it names.
            for new in created:
                _fsync_dir(os.path.dirname(new))
        with self._lock:
            self._made_dirs.add(directory)

    def put(self, key: str, data: BytesLike) -> None:
        path = self._path(key)
        directory = os.path.dirname(path)
        self._ensure_dir(directory)
        tmp = os.path.join(directory, f"{_TMP_PREFIX}{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileNotFoundError:  # the directory was removed behind our back: recreate it once
            with self._lock:
                self._made_dirs.discard(directory)
            self._ensure_dir(directory)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self._durable:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
        if self._durable:
            _fsync_dir(directory)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectMissing(key) from None

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        return {key for key in keys if os.path.isfile(self._path(key))}

    def touch_many(self, keys: Iterable[str]) -> set[str]:
        present: set[str] = set()
        for key in keys:
            try:
                os.utime(self._path(key))
            except FileNotFoundError:
                continue
            present.add(key)
        return present

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(key))

    def delete_if_older(self, key: str, cutoff: datetime) -> ObjectStat | None:
        """Move the file aside, then look at its time: a touch that came before the move changed
        the inode the moved name still has (and it goes back), one that comes after finds no file
        and its backup stores the chunk again. So no touch that reported the chunk present is
        lost, which a stat followed by an unlink cannot promise."""
        path = self._path(key)
        try:
            found = os.stat(path)
            if _modified(found) > cutoff:
                return ObjectStat(key=key, size=found.st_size, modified=_modified(found))
            aside = os.path.join(os.path.dirname(path), _aside_name(os.path.basename(path)))
            os.rename(path, aside)
        except FileNotFoundError:
            return None
        try:
            st = os.stat(aside)
            if _modified(st) > cutoff:
                # Touched between the look and the move: in use. Back under its name (over a copy
                # a backup may have stored meanwhile: the same chunk).
                os.replace(aside, path)
            else:
                os.unlink(aside)
        except FileNotFoundError:
            # Another collection's recovery put it back meanwhile: kept, for this sweep.
            return None
        return ObjectStat(key=key, size=st.st_size, modified=_modified(st))

    def recover_interrupted_sweeps(self) -> int:
        recovered = 0
        settled = time.time() - SWEEP_SETTLED_S
        for directory, _, files in os.walk(self.root):
            for name in files:
                if not name.startswith(_SWEEP_PREFIX):
                    continue
                aside = os.path.join(directory, name)
                original = _name_of_aside(name)
                if original is None:
                    log.warning("%s: not a name this repository gives; left alone", aside)
                    continue
                try:
                    if os.stat(aside).st_ctime > settled:
                        continue
                except FileNotFoundError:
                    continue
                path = os.path.join(directory, original)
                if os.path.exists(path):
                    # Stored again meanwhile: the same content, under a name derived from it.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(aside)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.rename(aside, path)
                        recovered += 1
                if self._durable:
                    _fsync_dir(directory)
        return recovered

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the directory that can contain the prefix, not the whole root.
        directory, _, _ = prefix.rpartition("/")
        if directory:
            validate_key(directory)
        start = os.path.join(self.root, directory) if directory else str(self.root)
        base = f"{directory}/" if directory else ""
        for key in _walk(start, base):
            if key.startswith(prefix):
                yield key

    def stat(self, key: str) -> ObjectStat:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        return ObjectStat(key=key, size=st.st_size, modified=_modified(st))


def _aside_name(name: str) -> str:
    """A sweep's temporary name for ``name``: hidden from listings, and naming what it was so that
    a sweep that stopped before its last step can be undone (:meth:`recover_interrupted_sweeps`)."""
    return f"{_SWEEP_PREFIX}{secrets.token_hex(8)}-{name}"


_ASIDE = re.compile(rf"{re.escape(_SWEEP_PREFIX)}[0-9a-f]{{16}}-(?P<name>[^/]+)")


def _name_of_aside(aside: str) -> str | None:
    found = _ASIDE.fullmatch(aside)
    return found["name"] if found else None


def _modified(st: os.stat_result) -> datetime:
    return datetime.fromtimestamp(st.st_mtime, UTC)


def _walk(directory: str, base: str) -> Iterator[str]:
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return
    except NotADirectoryError:
        return
    for entry in entries:
        if entry.name.startswith("."):
            continue  # temporary files of in-progress puts, or foreign dot-files
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(entry.path, f"{base}{entry.name}/")
        elif entry.is_file(follow_symlinks=False):
            yield f"{base}{entry.name}"


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (e.g. certain network mounts) refuse fsync on directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
