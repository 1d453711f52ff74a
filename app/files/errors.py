"""The errors of file-level browsing: one base class, one subclass per thing a user can get wrong or meet.

They carry no HTTP status on purpose: this is a library, and the service maps them to its own error kinds
(``PathNotFound`` → 404, ``InvalidPath`` → 422, …). Every message names the path or volume concerned and
says what to do instead, because it is shown to a person browsing a backup.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


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


class SourceFailure(BaseException):
    """The source below a parser failed (I/O error, missing or damaged chunk); ``error`` is what it raised.

    A ``BaseException`` so that a parser's ``except Exception`` cannot turn an unreadable repository into
    "corrupt filesystem" or "no filesystem found": it travels up to ``translate`` untouched, which raises
    ``error`` itself.
    """

    def __init__(self, error: Exception) -> None:
        super().__init__(error)
        self.error = error


def describe(exc: BaseException) -> str:
    """A parser's exception as one line: its message, or its type when it has none."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@contextmanager
def translate(context: str) -> Iterator[None]:
    """Run parser code: our errors pass, source failures become the source's error, the rest corruption.

    ``context`` says what was being done ("listing /etc on volume 2"), for the message. The parsers raise
    anything from ``EOFError`` to ``KeyError`` on damaged structures (and ``RecursionError`` on looping
    ones), so every other exception means the filesystem could not be read as it claims to be.
    """
    try:
        yield
    except FilesError:
        raise
    except SourceFailure as failure:
        raise failure.error from None
    except MemoryError:
        raise
    except Exception as exc:
        log.warning("%s: parser failed", context, exc_info=True)
        raise CorruptFilesystem(
            f"{context}: the filesystem's structures are damaged ({describe(exc)})"
        ) from exc
