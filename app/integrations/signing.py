"""Standard Webhooks signatures: HMAC-SHA256 over ``id.timestamp.body`` with the integration's secret.

Signing uses the reference library (``standardwebhooks``). Verification uses its signing too, but
reads the headers and checks the timestamp here: the library's ``verify`` compares the timestamp
with the machine's wall clock, and the service's notion of "now" is its :class:`~app.clock.Clock`
(tests move it; replay windows and SLA clocks must agree on one time). The library's ``verify``
also raises ``ValueError`` on a malformed signature header, which this module turns into the
same refusal as any other bad signature.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: How far a message's timestamp may be from now, either way (the Standard Webhooks default).
TOLERANCE = timedelta(minutes=5)


class SignatureError(Exception):
    """The message cannot be authenticated; the text says why (it never contains the secret)."""


@dataclass(frozen=True)
class SignedHeaders:
    message_id: str
    timestamp: datetime


def new_secret() -> str:
    """``whsec_`` and the base64 of 32 random bytes, the Standard Webhooks secret format."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: datetime, body: bytes) -> dict[str, str]:
    """The three headers of a signed message (``webhook-timestamp`` in whole seconds)."""
    at = timestamp.astimezone(UTC).replace(microsecond=0)
    signature = Webhook(secret).sign(message_id, at, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


def verify(
    secret: str, body: bytes, headers: Mapping[str, str], now: datetime, tolerance: timedelta = TOLERANCE
) -> SignedHeaders:
    """Check a message's signature and that its timestamp is within ``tolerance`` of ``now``."""
    message_id = headers.get("webhook-id", "")
    timestamp_text = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    missing = [
        name
        for name, value in (
            ("webhook-id", message_id),
            ("webhook-timestamp", timestamp_text),
            ("webhook-signature", signatures),
        )
        if not value
    ]
    if missing:
        raise SignatureError(f"missing header(s): {', '.join(missing)}")
    if len(message_id) > 255:
        raise SignatureError("webhook-id is longer than 255 characters")
    try:
        timestamp = datetime.fromtimestamp(int(timestamp_text), UTC)
    except (ValueError, OverflowError, OSError):
        raise SignatureError("webhook-timestamp is not a Unix time in seconds") from None
    if timestamp < now - tolerance:
        raise SignatureError(f"webhook-timestamp is more than {tolerance} old (a replay, or a clock off)")
    if timestamp > now + tolerance:
        raise SignatureError(f"webhook-timestamp is more than {tolerance} in the future (a clock off)")
    try:
        text = body.decode()
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8 text") from None
    expected = base64.b64decode(Webhook(secret).sign(message_id, timestamp, text).split(",", 1)[1])
    for candidate in signatures.split(" "):
        version, _, value = candidate.partition(",")
        if version != "v1" or not value:
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            return SignedHeaders(message_id, timestamp)
    raise SignatureError("no v1 signature matches the integration's secret")
