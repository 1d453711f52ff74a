"""The errors of file-level browsing: one base class, one subclass per thing a user can get wrong or meet.

They carry no HTTP status on purpose: this is a library, and the service maps them to its own error kinds
(``PathNotFound`` → 404, ``InvalidPath`` → 422, …). Every message names the path or volume concerned and
says what to do instead, because it is shown to a person browsing a backup.
"""

from __future__ import annotations


class FilesError(Exception):
    """Base of every error raised by ``app.files``; ``message`` is fit to show to a user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPath(FilesError):
    """The path is malformed: a NUL byte, ``..`` above the root, or longer than any filesystem allows."""


class PathNotFound(FilesError):
    """Nothing exists at the path (or it is a hidden filesystem metadata file)."""


class NotADirectory(FilesError):
    """A directory was needed (to list it, or to go through it), but the path names something else."""


class IsADirectory(FilesError):
    """File content was asked for, but the path names a directory."""


class NotAFile(FilesError):
    """File content was asked for, but the path names a symbolic link or a special file."""


class VolumeNotFound(FilesError):
    """The disk has no volume with that number or id."""


class UnsupportedFilesystem(FilesError):
    """The volume holds no filesystem that can be browsed (unknown, swap, encrypted, an LVM physical volume),
    or the filesystem uses a feature the reader cannot handle."""


class CorruptFilesystem(FilesError):
    """The filesystem's structures could not be read: damaged, or not what their signature promised."""
