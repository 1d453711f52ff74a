"""Bearer secrets for API keys and proxy tokens.

A secret looks like ``<prefix>_<lookup>_<random>``: the lookup part finds the row with an
index, the random part is compared against a SHA-256 hash (the secrets are 256-bit random, so
a slow password hash would add latency and no security).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

API_KEY_PREFIX = "vmr"
PROXY_TOKEN_PREFIX = "vmrp"  # noqa: S105 - a prefix, not a secret
GUEST_TOKEN_PREFIX = "vmrg"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class IssuedSecret:
    secret: str
    lookup_id: str
    secret_hash: str


@dataclass(frozen=True)
class ParsedSecret:
    prefix: str
    lookup_id: str
    random_part: str


def hash_secret(random_part: str) -> str:
    return hashlib.sha256(random_part.encode()).hexdigest()


def issue(prefix: str) -> IssuedSecret:
    lookup_id = secrets.token_hex(8)
    random_part = secrets.token_urlsafe(32)
    return IssuedSecret(
        secret=f"{prefix}_{lookup_id}_{random_part}",
        lookup_id=lookup_id,
        secret_hash=hash_secret(random_part),
    )


def parse(secret: str) -> ParsedSecret | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return ParsedSecret(prefix=parts[0], lookup_id=parts[1], random_part=parts[2])


def matches(parsed: ParsedSecret, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(parsed.random_part), stored_hash)
