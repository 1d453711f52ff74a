"""File sets: restore a tar stream into a target directory, safely, optionally only chosen paths.

tarfile parses; this module decides every filesystem call itself, because a restore must keep what
tarfile's ``data`` filter normalises away (owners, setuid bits, exact modes) while being at least as
strict about where things land. The rules, each failing with ``UnsafeArchiveMember``:

* a member name must be relative and free of ``..``; our own archives never have either;
* no member may lie below a symbolic link of the archive (``link/file``): symlinks are created only
  after everything else (as GNU tar does for links that point outside), so nothing is ever written
  through a link the archive made;
* every parent directory must resolve (``realpath``, following links already in the target) to a
  place inside the target;
* an existing file or link at a member's path is removed and replaced, never opened and written
  through; files are created with ``O_EXCL | O_NOFOLLOW``;
* a hard link must name a regular file this restore already wrote.

Symbolic links pointing outside the target (``/etc/localtime -> /usr/share/zoneinfo/...``, common in
system trees) are restored as links by default (``external_symlinks="restore"``: safe, because of the
rules above, and what restoring /etc needs); ``"refuse"`` fails on them, ``"skip"`` leaves them out with
a warning. Sockets and device nodes are never in our archives; other archives' are skipped.

Owners are restored when running as root (by name, falling back to the numeric id, like tar); without
owners, setuid/setgid bits are dropped so a restore never creates a root-owned setuid file by accident.
A failed restore (a damaged stream, an unsafe member) leaves the files written before the failure.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import stat
import tarfile
import threading
from collections.abc import Callable, Sequence
from typing import Literal

from app.agent.apps.errors import RestoreFailed
from app.agent.apps.files_backup import ENGINE, FORMAT
from app.agent.apps.results import FilesRestoreResult
from app.chunkstore.errors import ChunkstoreError, UnsafeArchiveMember
from app.chunkstore.manifest import RestorePoint
from app.chunkstore.repository import Repository
from app.chunkstore.streamread import DEFAULT_WORKERS, StreamReader, stream_record

ExternalSymlinks = Literal["restore", "refuse", "skip"]
COPY_BUFFER = 1 << 20
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def checked_name(name: str) -> str:
    """The member's path, normalised (``a/./b/`` -> ``a/b``); refuses absolute paths and ``..``."""
    if not name or "\0" in name:
        raise UnsafeArchiveMember(name, "empty name or NUL byte")
    if name.startswith("/"):
        raise UnsafeArchiveMember(name, "absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveMember(name, "'..' in the path")
    return "/".join(parts)


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's modification time in nanoseconds, exactly when a pax header has the decimal."""
    text = member.pax_headers.get("mtime", "")
    seconds, _, fraction = text.partition(".")
    if seconds.isdigit() and (not fraction or fraction.isdigit()):
        return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return round(member.mtime * 1_000_000_000)


def _selection(paths: Sequence[str] | None) -> tuple[str, ...] | None:
    if paths is None:
        return None
    out = []
    for path in paths:
        clean = "/".join(p for p in str(path).split("/") if p not in ("", "."))
        if ".." in clean.split("/"):
            raise ValueError(f"selected path {path!r} contains '..'")
        out.append(clean)
    return tuple(out)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


class _Extractor:
    def __init__(
        self,
        root: str,
        *,
        selection: tuple[str, ...] | None,
        owners: bool,
        numeric_owner: bool,
        external_symlinks: ExternalSymlinks,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.root = root
        self.selection = selection
        self.owners = owners
        self.numeric_owner = numeric_owner
        self.external_symlinks = external_symlinks
        self.progress = progress
        self.result = FilesRestoreResult()
        self.links: set[str] = set()  # symlink members seen: nothing may lie below them
        self.files: set[str] = set()  # regular files written: valid hard link targets
        self.deferred: dict[str, tarfile.TarInfo] = {}  # symlinks, created last
        self.dirs: list[tuple[str, tarfile.TarInfo]] = []  # attributes set last
        self._ids: dict[tuple[str, str], int | None] = {}

    # -- checks --------------------------------------------------------------------------------

    def selected(self, name: str) -> bool:
        if self.selection is None:
            return True
        return any(not s or name == s or name.startswith(s + "/") for s in self.selection)

    def check_not_below_link(self, name: str, shown: str) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            prefix = "/".join(parts[:i])
            if prefix in self.links:
                raise UnsafeArchiveMember(shown, f"lies below the symbolic link {prefix!r} of the archive")

    def destination(self, name: str, shown: str) -> str:
        """The member's absolute path, its parents created, after checking they stay inside."""
        dest = os.path.join(self.root, name)
        parent = os.path.dirname(dest)
        if not _inside(self.root, os.path.realpath(parent)):
            raise UnsafeArchiveMember(shown, "its directory resolves to a place outside the target")
        os.makedirs(parent, exist_ok=True)
        return dest

    def clear(self, dest: str, shown: str) -> bool:
        """Remove a non-directory at ``dest`` (a link is removed, never followed); False if a
        directory is in the way."""
        if not self.free(dest, shown):
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dest)
        return True

    def free(self, dest: str, shown: str) -> bool:
        """False, with a warning, when a directory stands at ``dest``."""
        try:
            is_dir = stat.S_ISDIR(os.lstat(dest).st_mode)
        except FileNotFoundError:
            return True
        if is_dir:
            self.result.warnings.append(f"{shown}: skipped: a directory is in the way")
        return not is_dir

    # -- members ---------------------------------------------------------------------------------

    def extract(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        name = checked_name(member.name)
        if not name:
            return  # "." : the target itself
        self.deferred.pop(name, None)  # a later member of the same name wins
        if not self.selected(name):
            if member.issym():
                self.links.add(name)
            return
        self.check_not_below_link(name, member.name)
        if member.issym():
            self.symlink(name, member)
            return
        dest = self.destination(name, member.name)
        if member.isdir():
            self.directory(dest, member)
        elif member.isreg():
            self.regular(tar, name, dest, member)
        elif member.islnk():
            self.hardlink(name, dest, member)
        else:
            self.result.warnings.append(f"{member.name}: skipped: not a file, directory or link")

    def directory(self, dest: str, member: tarfile.TarInfo) -> None:
        try:
            st = os.lstat(dest)
        except FileNotFoundError:
            os.mkdir(dest, 0o700)
        else:
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(dest)
                os.mkdir(dest, 0o700)
        self.dirs.append((dest, member))
        self.result.directories += 1

    def regular(self, tar: tarfile.TarFile, name: str, dest: str, member: tarfile.TarInfo) -> None:
        """Written beside ``dest`` under a temporary name and renamed over it once complete: a
        damaged chunk, a cancel or a crash mid-file leaves the existing file as it was, never a
        truncated one in its place. The data reaches the disk before the rename: after a power
        loss XFS (and ext4 without its rename heuristic) could otherwise show the renamed file
        empty, the old one gone."""
        if not self.free(dest, member.name):
            return
        source = tar.extractfile(member)
        assert source is not None
        temporary = os.path.join(
            os.path.dirname(dest), f".{os.path.basename(dest)}.vmr-{secrets.token_hex(6)}"
        )
        fd = os.open(temporary, _CREATE_FLAGS, 0o600)
        try:
            try:
                while block := source.read(COPY_BUFFER):
                    view = memoryview(block)
                    while view:
                        view = view[os.write(fd, view) :]
                    self.result.bytes_written += len(block)
                    if self.progress is not None:
                        self.progress(self.result.bytes_written)
                self.attributes(fd, member)
                os.fsync(fd)
            finally:
                os.close(fd)
            # rename() replaces a file or a link at dest (the link itself, never its target).
            os.rename(temporary, dest)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self.files.add(name)
        self.result.files += 1

    def hardlink(self, name: str, dest: str, member: tarfile.TarInfo) -> None:
        source = checked_name(member.linkname)
        self.check_not_below_link(source, member.name)
        if source not in self.files:
            self.result.warnings.append(
                f"{member.name}: skipped: hard link to {source!r}, which was not restored"
            )
            return
        if not self.clear(dest, member.name):
            return
        os.link(os.path.join(self.root, source), dest, follow_symlinks=False)
        self.files.add(name)
        self.result.hardlinks += 1

    def symlink(self, name: str, member: tarfile.TarInfo) -> None:
        self.links.add(name)
        target = member.linkname
        resolved = os.path.normpath(os.path.join(os.path.dirname(name), target))
        external = os.path.isabs(target) or resolved == ".." or resolved.startswith("../")
        if external and self.external_symlinks == "refuse":
            raise UnsafeArchiveMember(member.name, f"symbolic link to {target!r} leads outside the target")
        if external and self.external_symlinks == "skip":
            self.result.warnings.append(
                f"{member.name}: skipped: symbolic link to {target!r} outside the target"
            )
            return
        self.deferred[name] = member

    def finish(self) -> None:
        """Symlinks (nothing can be written through them any more), then directory attributes."""
        for name, member in self.deferred.items():
            dest = self.destination(name, member.name)
            if not self.clear(dest, member.name):
                continue
            os.symlink(member.linkname, dest)
            ids = self.ids(member)
            if ids is not None:
                os.chown(dest, *ids, follow_symlinks=False)
            os.utime(dest, ns=(mtime_ns(member),) * 2, follow_symlinks=False)
            self.result.symlinks += 1
        for dest, member in reversed(self.dirs):
            fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                self.attributes(fd, member)
            finally:
                os.close(fd)

    # -- attributes ------------------------------------------------------------------------------

    def attributes(self, fd: int, member: tarfile.TarInfo) -> None:
        ids = self.ids(member)
        if ids is not None:
            os.fchown(fd, *ids)  # before chmod: chown clears setuid/setgid
            os.fchmod(fd, member.mode & 0o7777)
        else:
            os.fchmod(fd, member.mode & 0o777)
        os.utime(fd, ns=(mtime_ns(member),) * 2)

    def ids(self, member: tarfile.TarInfo) -> tuple[int, int] | None:
        if not self.owners:
            return None
        uid = member.uid if self.numeric_owner else self._lookup("user", member.uname, member.uid)
        gid = member.gid if self.numeric_owner else self._lookup("group", member.gname, member.gid)
        return uid, gid

    def _lookup(self, kind: str, name: str, fallback: int) -> int:
        if not name:
            return fallback
        key = (kind, name)
        if key not in self._ids:
            try:
                self._ids[key] = pwd.getpwnam(name).pw_uid if kind == "user" else grp.getgrnam(name).gr_gid
            except KeyError:
                self._ids[key] = None
        found = self._ids[key]
        return fallback if found is None else found


def restore_files(
    repo: Repository,
    point: RestorePoint | str,
    stream: str,
    target: str | os.PathLike[str],
    *,
    paths: Sequence[str] | None = None,
    owners: bool | None = None,
    numeric_owner: bool = False,
    external_symlinks: ExternalSymlinks = "restore",
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[int], None] | None = None,
    cancel: threading.Event | None = None,
) -> FilesRestoreResult:
    """Restore file set ``stream`` of ``point`` below ``target`` (created if needed).

    Members keep their archive paths below the target (``etc/hosts`` -> ``<target>/etc/hosts``; the
    target ``/`` puts files back where they were). ``paths`` restores only those archive paths and
    what lies below them (``/etc/nginx`` or ``etc/nginx``). ``owners`` defaults to "if running as
    root". Raises ``UnsafeArchiveMember`` for an archive that tries to escape the target, and
    ``RestoreFailed`` for a damaged stream, an unreadable archive or a cancelled restore.
    """
    if isinstance(point, str):
        point = repo.read_restore_point(point)
    record = stream_record(repo, point, stream)
    if record.metadata.get("engine") != ENGINE or record.metadata.get("format") != FORMAT:
        raise RestoreFailed(f"stream {stream!r} is not a file set")
    root = os.path.realpath(os.fspath(target))
    os.makedirs(root, exist_ok=True)
    extractor = _Extractor(
        root,
        selection=_selection(paths),
        owners=os.geteuid() == 0 if owners is None else owners,
        numeric_owner=numeric_owner,
        external_symlinks=external_symlinks,
        progress=progress,
    )
    left = f"files restored before the error are left in {root}"
    try:
        with (
            StreamReader(repo, point, stream, workers=workers) as reader,
            tarfile.open(fileobj=reader, mode="r|", bufsize=COPY_BUFFER) as tar,
        ):
            for member in tar:
                if cancel is not None and cancel.is_set():
                    raise RestoreFailed(f"restore cancelled; {left}")
                extractor.extract(tar, member)
            while reader.read(COPY_BUFFER):  # to the end: the whole-stream check runs there
                pass
        extractor.finish()
    except UnsafeArchiveMember:
        raise
    except ChunkstoreError as exc:
        raise RestoreFailed(f"the backup stream cannot be read back: {exc}; {left}") from exc
    except tarfile.TarError as exc:
        raise RestoreFailed(f"the file set is not a readable archive: {exc}; {left}") from exc
    except OSError as exc:
        raise RestoreFailed(f"cannot write below {root}: {exc}; {left}") from exc
    return extractor.result
