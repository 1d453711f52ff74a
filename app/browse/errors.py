"""File-browsing errors as the API's error kinds: each keeps the library's message, which names the
path or volume and says what to do."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from app.chunkstore import ChunkstoreError
from app.errors import Conflict, DomainError, InvalidInput, NotFound
from app.files import (
    CorruptFilesystem,
    FilesError,
    InvalidPath,
    IsADirectory,
    NotADirectory,
    NotAFile,
    PathNotFound,
    UnsupportedFilesystem,
    VolumeNotFound,
)
from app.files.names import printable


class DataDamaged(DomainError):
    """The restore point's data in the repository cannot be read back as written."""

    status = 500
    title = "Backup data damaged"
    type_slug = "backup-data-damaged"


def domain_error(exc: FilesError | ChunkstoreError, field: list[str | int] | None = None) -> DomainError:
    if isinstance(exc, ChunkstoreError):
        return DataDamaged(
            f"The restore point's data cannot be read back ({exc}); run 'vmrecovery repository verify' "
            "and use another restore point."
        )
    message = printable(exc.message)  # it may quote names that are not UTF-8
    if isinstance(exc, PathNotFound | VolumeNotFound):
        return NotFound(message)
    if isinstance(exc, InvalidPath):
        return InvalidInput(message, field=field)
    if isinstance(exc, NotADirectory | IsADirectory | NotAFile | UnsupportedFilesystem):
        return InvalidInput(message, field=field)
    if isinstance(exc, CorruptFilesystem):
        return Conflict(message)
    return InvalidInput(message, field=field)


@contextmanager
def as_domain_errors(field: list[str | int] | None = None) -> Iterator[None]:
    try:
        yield
    except (FilesError, ChunkstoreError) as exc:
        raise domain_error(exc, field) from exc
