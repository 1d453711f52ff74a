"""File restore out of an image restore point: an archive in the repository, or files into the VM.

archive: files → tar/zip → a stream of a repository export (``restore-<id>``), committed last; the
service streams it to the user. guest: each file is pushed into the running VM through vCenter guest
operations with the account the user gave; directories are created, symbolic links are reported
(guest operations cannot create them). Either way the files are read lazily from the backup: only
the chunks holding them are fetched, each verified.
"""

from __future__ import annotations

import contextlib
import logging
import posixpath
from collections.abc import Callable, Iterator

from app.agent.cleanup import endpoint_of
from app.agent.files.archive import ArchiveFigures, write_tar, write_zip
from app.agent.files.selection import Selection
from app.agent.repositories import RepositoryCache
from app.agent.runtime import JobRuntime
from app.chunkstore import ChunkstoreError, ExportExists, ExportNotFound, Repository, open_stream_backup
from app.chunkstore.errors import BackupCancelled
from app.contracts.agent import CompleteRequest, FileRestoreParams, FileRestoreResult, JobAssignment
from app.files import EntryType, FilesError
from app.files.names import printable
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.guest_files import GuestFiles, VimGuestFiles
from app.vadp.session import open_session
from app.vadp.vms import find_vm

log = logging.getLogger(__name__)

ARCHIVE_STREAMS = {"tar": "archive.tar", "zip": "archive.zip"}
PIECE = 1 << 20

#: How the runner reaches the VM's guest for delivery 'guest' (tests inject theirs).
GuestOpener = Callable[[JobAssignment], "GuestSession"]


class GuestSession:
    """A guest file writer and what closes it."""

    def __init__(self, files: GuestFiles, close: Callable[[], None]) -> None:
        self.files = files
        self.close = close


def open_vim_guest(a: JobAssignment) -> GuestSession:
    p = a.file_restore
    assert p is not None and p.guest is not None
    session = open_session(endpoint_of(a.vcenter_access())).__enter__()
    try:
        vm = find_vm(session, a.vm.instance_uuid)
        if vm.power_state != "poweredOn":
            raise VCenterError(
                VCenterErrorKind.INVALID_STATE,
                f"VM '{a.vm.name}' is {vm.power_state}: files can only be put into a running VM; "
                "download them as an archive instead",
                transient=False,
            )
        files = VimGuestFiles(session, vm.handle, p.guest.username, p.guest.password)
    except BaseException:
        session.close()
        raise
    return GuestSession(files, session.close)


class FileRestoreRunner:
    def __init__(
        self, repositories: RepositoryCache | None = None, guest: GuestOpener = open_vim_guest
    ) -> None:
        self.repositories = repositories or RepositoryCache()
        self.guest = guest

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        p = assignment.file_restore
        assert p is not None
        try:
            repo = self.repositories.get(assignment.repository)
            point = repo.read_restore_point(str(p.restore_point_id))
            selection = Selection(repo, point, p.files)
            if p.delivery == "archive":
                target = self.repositories.get(p.export_repository) if p.export_repository else repo
                result = self._archive(target, assignment, p, selection, runtime)
            else:
                result = self._into_guest(assignment, p, selection, runtime)
        except BackupCancelled:
            return CompleteRequest(outcome="cancelled", error="cancelled", warnings=runtime.warnings)
        except FilesError as exc:
            return CompleteRequest(
                outcome="failed", error=exc.message, error_kind="permanent", warnings=runtime.warnings
            )
        except VCenterError as exc:
            kind = "transient" if exc.transient else "permanent"
            return CompleteRequest(
                outcome="failed", error=exc.message, error_kind=kind, warnings=runtime.warnings
            )
        except ChunkstoreError as exc:
            return CompleteRequest(
                outcome="failed",
                error=f"repository: {exc}",
                error_kind="transient",
                warnings=runtime.warnings,
            )
        for skipped in selection.skipped:
            runtime.warn(skipped)
        result.skipped = selection.skipped[:1000]
        return CompleteRequest(outcome="succeeded", file_restore=result, warnings=runtime.warnings)

    # -- archive -----------------------------------------------------------------------------------

    def _archive(
        self,
        repo: Repository,  # where the archive goes (the points may be read from another)
        a: JobAssignment,
        p: FileRestoreParams,
        selection: Selection,
        runtime: JobRuntime,
    ) -> FileRestoreResult:
        # A retry after a crash between commit and report: build the archive again from scratch.
        with contextlib.suppress(ExportNotFound):
            repo.delete_export(p.export_id)
        writer = repo.begin_export(
            p.export_id,
            metadata={
                "restore_id": str(p.restore_id),
                "restore_point_id": str(p.restore_point_id),
                "vm_name": a.vm.name,
                "format": p.archive_format,
            },
        )
        name = ARCHIVE_STREAMS[p.archive_format]
        runtime.report("writing archive", urgent=True)

        def progress(done: int) -> None:
            runtime.report("writing archive", bytes_read=done)

        with open_stream_backup(writer, name, cancel=runtime.cancel) as sink:
            write = write_zip if p.archive_format == "zip" else write_tar
            figures: ArchiveFigures = write(selection, sink, runtime.cancel, progress)
            stream = sink.finish(metadata={"sha256": figures.sha256, "files": figures.files})
        try:
            writer.commit()
        except ExportExists:  # cannot happen after the delete above unless two attempts raced
            raise ChunkstoreError(f"export {p.export_id} was written twice") from None
        runtime.report(
            "archive written",
            bytes_read=figures.bytes,
            bytes_new=stream.stats.bytes_new,
            bytes_stored=stream.stats.bytes_stored,
        )
        return FileRestoreResult(
            delivery="archive",
            files=figures.files,
            bytes=figures.bytes,
            export_id=p.export_id,
            archive_name=name,
            archive_size=figures.size,
            archive_sha256=figures.sha256,
        )

    # -- into the VM -----------------------------------------------------------------------------------

    def _into_guest(
        self, a: JobAssignment, p: FileRestoreParams, selection: Selection, runtime: JobRuntime
    ) -> FileRestoreResult:
        assert p.guest is not None
        guest = self.guest(a)
        files = done = 0
        try:
            for item in selection.items():
                if runtime.cancel.is_set():
                    raise BackupCancelled("restore cancelled")
                entry = item.entry
                # vCenter's guest operations take names as text: a byte that is not UTF-8 is
                # written as \xNN (app.files.names).
                target = printable(
                    posixpath.join(p.guest.target_directory, item.name)
                    if p.guest.target_directory
                    else entry.path
                )
                if entry.type is EntryType.DIR:
                    guest.files.make_directory(target)
                elif entry.type is EntryType.SYMLINK:
                    link = printable(entry.symlink_target or "")
                    selection.skipped.append(
                        f"{printable(entry.path)}: a symbolic link to {link}; "
                        "guest operations cannot create links"
                    )
                else:
                    guest.files.make_directory(posixpath.dirname(target) or "/")
                    with item.fs.open(entry.path) as source:
                        guest.files.put_file(
                            target, _pieces(source.read), entry.size, entry.mode, p.guest.overwrite
                        )
                    files += 1
                    done += entry.size
                    runtime.report(f"restoring {printable(entry.name)}", bytes_read=done)
        finally:
            guest.close()
        return FileRestoreResult(delivery="guest", files=files, bytes=done)


def _pieces(read: Callable[[int], bytes]) -> Iterator[bytes]:
    while True:
        piece = read(PIECE)
        if not piece:
            return
        yield piece
