"""Errors of application backups and restores, worded for the person who has to act on them.

Every message names the tool or the step that failed and carries the tool's own words (its stderr,
bounded), so a job's result reads "pg_dump failed: FATAL: database "x" does not exist" rather than
"exit status 1". Secrets never appear: commands are not quoted back, only their program names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar


class AppError(Exception):
    """Base class: an application backup, restore or quiesce step failed."""


class ToolMissing(AppError):
    """A client tool (pg_dump, mariadb-dump...) is not installed or too old for the server."""


class DumpFailed(AppError):
    """The dump tool failed or its output is incomplete: nothing was recorded for this stream."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class RestoreFailed(AppError):
    """A restore did not complete; the message says in what state it left the target."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class TargetExists(AppError):
    """The restore target exists and replacing it was not asked for."""


class QueryFailed(AppError):
    """A control query (psql, mariadb) failed."""

    def __init__(self, message: str, *, stderr: str = "") -> None:
        super().__init__(message)
        self.stderr = stderr


class QuiesceError(AppError):
    """Freezing or thawing an application failed; the snapshot may be crash-consistent only."""


_P = ParamSpec("_P")
_R = TypeVar("_R")


def query_failures_as(
    kind: type[DumpFailed] | type[RestoreFailed],
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Report a failed control query (cannot connect, access denied...) as the job's own failure
    kind, so a caller handles one exception type per job."""

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return fn(*args, **kwargs)
            except QueryFailed as exc:
                raise kind(str(exc), stderr=exc.stderr) from None

        return run

    return decorate
