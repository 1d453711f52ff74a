"""Errors of the vCenter client, classified so that users get an actionable message."""

from __future__ import annotations

from enum import StrEnum


class VCenterErrorKind(StrEnum):
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    TLS_UNTRUSTED = "tls_untrusted"
    AUTH_FAILED = "auth_failed"
    NOT_A_VCENTER = "not_a_vcenter"
    API_ERROR = "api_error"


class VCenterError(Exception):
    """A vCenter call failed; ``kind`` says which way, ``message`` what to do about it."""

    def __init__(self, kind: VCenterErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
