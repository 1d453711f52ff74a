"""Errors of the vCenter client, classified so that users get an actionable message."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum


class VCenterErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    TLS_UNTRUSTED = "tls_untrusted"
    AUTH_FAILED = "auth_failed"
    NOT_A_VCENTER = "not_a_vcenter"
    API_ERROR = "api_error"
    # The data path (snapshots, disk reads and writes, restores):
    NOT_FOUND = "not_found"  # a VM, snapshot, disk or datastore file does not exist
    INVALID_STATE = "invalid_state"  # e.g. restoring onto a powered-on VM without force
    TASK_FAILED = "task_failed"  # a vCenter task ended in error
    DISK_IO = "disk_io"  # reading or writing disk data over the transport failed
    UNSUPPORTED = "unsupported"  # the transport cannot handle this disk (delta, RDM, vSAN, ...)


# Kinds where trying the same thing again later may well succeed.
_TRANSIENT_KINDS = frozenset({VCenterErrorKind.UNREACHABLE, VCenterErrorKind.TIMEOUT})


class VCenterError(Exception):
    """A vCenter call failed; ``kind`` says which way, ``message`` what to do about it.

    ``transient`` tells an agent whether retrying the job later makes sense (network trouble,
    a vCenter restarting) or whether it is permanent for that job (no such VM, unsupported
    disk); it defaults from the kind.
    """

    def __init__(self, kind: VCenterErrorKind, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.transient = kind in _TRANSIENT_KINDS if transient is None else transient


class DiskIOError(VCenterError):
    """Reading or writing a disk file failed; names the datastore file and the offset."""

    def __init__(
        self,
        message: str,
        *,
        file: str,
        offset: int | None = None,
        kind: VCenterErrorKind = VCenterErrorKind.DISK_IO,
        transient: bool | None = None,
    ) -> None:
        super().__init__(kind, message, transient=transient)
        self.file = file
        self.offset = offset


class SnapshotCleanupError(VCenterError):
    """Some snapshots could not be removed; ``removed`` lists the names that were."""

    def __init__(self, message: str, *, removed: Sequence[str], failures: Sequence[str]) -> None:
        super().__init__(VCenterErrorKind.TASK_FAILED, message, transient=True)
        self.removed = list(removed)
        self.failures = list(failures)
