"""File sets: chosen files and directories archived as one POSIX (pax) tar stream.

tar is the format every Linux admin can open without us, and ``tarfile``'s streaming mode (``w|``)
writes straight into the ``StreamBackup`` without a temporary file. Entries are visited in sorted
order, so an unchanged tree produces an identical archive and deduplicates completely.

What is kept: regular files, directories, symbolic links (never followed), hard links (once, then as
links), modes, owners (numbers and names), modification times (sub-second, in pax headers). What is
skipped, each with a warning, never a crash: sockets, FIFOs and device nodes; files or directories
that cannot be read or vanished. A file that shrinks while it is read is padded with zeros to the size
its header announced (tar cannot take a header back) and one that grows is cut at that size; both are
reported. Not kept: extended attributes, ACLs, SELinux labels, sparseness.
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import tarfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from app.agent.apps.results import METADATA_WARNINGS, AppBackupResult, files_stream_name
from app.chunkstore.backup import ProgressCallback
from app.chunkstore.cdc import DEFAULT_PARAMS, CdcParams
from app.chunkstore.repository import RestorePointWriter
from app.chunkstore.streams import DEFAULT_WORKERS, StreamBackup, open_stream_backup

ENGINE = "files"
FORMAT = "tar-pax"
TAR_BUFFER = 1 << 20
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@dataclass(slots=True)
class _Counts:
    files: int = 0
    directories: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0


class _ExactReader(io.RawIOBase):
    """Exactly ``size`` bytes of an open file, whatever happens to it while it is read."""

    def __init__(self, f: io.BufferedReader, size: int, path: str, warnings: list[str]) -> None:
        super().__init__()
        self._f = f
        self._left = size
        self._path = path
        self._warnings = warnings
        self._failed = False

    @property
    def failed(self) -> bool:
        return self._failed

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._left)
        view = memoryview(buffer).cast("B")[:want]
        n = 0
        while n < want and not self._failed:  # tarfile wants full reads: fill, or pad at the end
            try:
                got = self._f.readinto(view[n:]) or 0
            except OSError as exc:
                self._failed = True
                self._warnings.append(f"{self._path}: read error, rest stored as zeros: {exc.strerror}")
                break
            if got == 0:
                self._failed = True
                self._warnings.append(f"{self._path}: shrank while being read, rest stored as zeros")
                break
            n += got
        if n < want:  # the header already promised this many bytes
            view[n:] = bytes(want - n)
        self._left -= want
        return want


class _Archiver:
    def __init__(self, tar: tarfile.TarFile, excludes: Sequence[str], one_file_system: bool) -> None:
        self.tar = tar
        self.excludes = tuple(excludes)
        self.one_file_system = one_file_system
        self.warnings: list[str] = []
        self.counts = _Counts()

    def excluded(self, path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self.excludes)

    def add_tree(self, root: str) -> None:
        try:
            st = os.lstat(root)
        except OSError as exc:
            self.warnings.append(f"{root}: skipped: {exc.strerror}")
            return
        device = st.st_dev
        stack = [(root, st)]
        while stack:
            path, st = stack.pop()
            if self.excluded(path):
                continue
            if stat.S_ISDIR(st.st_mode):
                if path != "/":
                    self._add_plain(path)
                if self.one_file_system and st.st_dev != device:
                    continue
                try:
                    with os.scandir(path) as it:
                        entries = sorted(it, key=lambda e: e.name)
                except OSError as exc:
                    self.warnings.append(f"{path}: cannot list the directory: {exc.strerror}")
                    continue
                children = []
                for entry in entries:
                    try:
                        children.append((entry.path, entry.stat(follow_symlinks=False)))
                    except OSError as exc:
                        self.warnings.append(f"{entry.path}: skipped: {exc.strerror}")
                stack.extend(reversed(children))  # popped in sorted order
            elif stat.S_ISREG(st.st_mode):
                self._add_file(path)
            elif stat.S_ISLNK(st.st_mode):
                self._add_plain(path)
            else:
                kind = (
                    "socket"
                    if stat.S_ISSOCK(st.st_mode)
                    else "FIFO"
                    if stat.S_ISFIFO(st.st_mode)
                    else "device"
                )
                self.warnings.append(f"{path}: skipped: a {kind}")

    def _add_plain(self, path: str) -> None:
        """A directory or symlink: the header is all there is."""
        try:
            info = self.tar.gettarinfo(path, arcname=_arcname(path))
            _exact_mtime(info, os.lstat(path).st_mtime_ns)
        except OSError as exc:
            self.warnings.append(f"{path}: skipped: {exc.strerror}")
            return
        self.tar.addfile(info)
        if info.isdir():
            self.counts.directories += 1
        else:
            self.counts.symlinks += 1

    def _add_file(self, path: str) -> None:
        """Open first (never follow a link swapped in since the listing), describe what was opened."""
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:
            self.warnings.append(f"{path}: skipped: {exc.strerror}")
            return
        with os.fdopen(fd, "rb") as f:
            try:
                os.set_blocking(fd, True)
                info = self.tar.gettarinfo(arcname=_arcname(path), fileobj=f)
                _exact_mtime(info, os.fstat(fd).st_mtime_ns)
            except OSError as exc:
                self.warnings.append(f"{path}: skipped: {exc.strerror}")
                return
            if info.islnk():
                self.tar.addfile(info)
                self.counts.hardlinks += 1
            elif info.isreg():
                reader = _ExactReader(f, info.size, path, self.warnings)
                self.tar.addfile(info, reader)
                if not reader.failed and _grew(f):
                    self.warnings.append(f"{path}: grew while being read, stored up to its size at the start")
                self.counts.files += 1
                self.counts.bytes += info.size
            else:
                self.warnings.append(f"{path}: skipped: no longer a regular file")


def _exact_mtime(info: tarfile.TarInfo, mtime_ns: int) -> None:
    """The modification time to the nanosecond, as a pax decimal (tarfile would write a float's
    rounding of it); ``files_restore.mtime_ns`` reads it back exactly."""
    seconds, ns = divmod(mtime_ns, 1_000_000_000)
    if ns:
        info.pax_headers = {**info.pax_headers, "mtime": f"{seconds}.{ns:09d}".rstrip("0")}


def _grew(f: io.BufferedReader) -> bool:
    try:
        return bool(f.read(1))
    except OSError:
        return False


def _arcname(path: str) -> str:
    return path.lstrip("/")


def _roots(paths: Sequence[str]) -> list[str]:
    """Absolute, normalised, sorted, and without paths already inside another one."""
    roots: list[str] = []
    for path in sorted({os.path.normpath(str(p)) for p in paths}):
        if not os.path.isabs(path):
            raise ValueError(f"file set paths must be absolute: {path!r}")
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
            roots.append(path)
    return roots


class _Sink:
    """The stream as tarfile writes it, which can be told to drop what comes after a failure."""

    def __init__(self, backup: StreamBackup) -> None:
        self.backup = backup
        self.discard = False

    def write(self, data: bytes) -> int:
        if self.discard:
            return len(data)
        return self.backup.write(data)


def backup_files(
    writer: RestorePointWriter,
    paths: Sequence[str | os.PathLike[str]],
    *,
    label: str = "default",
    stream_name: str | None = None,
    excludes: Sequence[str] = (),
    one_file_system: bool = False,
    params: CdcParams = DEFAULT_PARAMS,
    workers: int = DEFAULT_WORKERS,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
) -> AppBackupResult:
    """Archive ``paths`` (absolute; files or directories) as stream ``files/<label>``.

    ``excludes`` are shell patterns matched against absolute paths (``/var/cache/*``). Members are
    named by their absolute path without the leading ``/`` (``etc/hosts``). Unreadable or special
    entries become warnings (in the result, and the first ones in the stream's metadata).
    """
    roots = _roots([os.fspath(p) for p in paths])
    name = stream_name or files_stream_name(label)
    metadata = {"engine": ENGINE, "format": FORMAT, "paths": roots, "excludes": list(excludes)}
    with open_stream_backup(
        writer, name, metadata=metadata, params=params, workers=workers, progress=progress, cancel=cancel
    ) as backup:
        sink = _Sink(backup)
        with tarfile.open(  # type: ignore[call-overload]  # any object with write() will do
            fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT, bufsize=TAR_BUFFER
        ) as tar:
            try:
                archiver = _Archiver(tar, excludes, one_file_system)
                for root in roots:
                    archiver.add_tree(root)
            except BaseException:
                # tarfile's exit flushes its buffer into the stream being aborted; that write's
                # error would replace the cause (a cancel, an object store down).
                sink.discard = True
                raise
        counts = archiver.counts
        done = backup.finish(
            metadata={
                "files": counts.files,
                "directories": counts.directories,
                "symlinks": counts.symlinks,
                "hardlinks": counts.hardlinks,
                "file_bytes": counts.bytes,
                "warnings": len(archiver.warnings),
                "first_warnings": archiver.warnings[:METADATA_WARNINGS],
            }
        )
    return AppBackupResult(done.record, done.stats, tuple(archiver.warnings))
