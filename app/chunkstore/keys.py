"""The repository master key: generated once, stored only wrapped by a passphrase-derived key.

The config holds scrypt parameters, a salt and the master key encrypted with AES-256-GCM under the
scrypt output (the repository id is associated data, so a wrapped key cannot be moved to another
repository's config). Working keys are derived from the master key with BLAKE3's key-derivation mode,
one per purpose, so that the chunk-id key, the chunk encryption key and the metadata key are independent.
Changing the passphrase rewraps the same master key: nothing else in the repository changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from app.chunkstore.errors import WrongPassphrase

MASTER_KEY_SIZE = 32
NONCE_SIZE = 12

_CONTEXT_ID = "vm-recovery chunkstore 2025 chunk-id key"
_CONTEXT_CHUNK = "vm-recovery chunkstore 2025 chunk encryption key"
_CONTEXT_META = "vm-recovery chunkstore 2025 metadata encryption key"


@dataclass(frozen=True, slots=True)
class ScryptParams:
    """scrypt cost parameters; the defaults take ~0.1 s and 32 MiB, once per repository open."""

    n: int = 2**15
    r: int = 8
    p: int = 1
    salt: bytes = b""

    def with_salt(self) -> ScryptParams:
        return ScryptParams(n=self.n, r=self.r, p=self.p, salt=os.urandom(16))


@dataclass(frozen=True, slots=True)
class RepositoryKeys:
    id_key: bytes
    chunk_key: bytes
    meta_key: bytes

    @classmethod
    def derive(cls, master_key: bytes) -> RepositoryKeys:
        return cls(
            id_key=blake3.blake3(master_key, derive_key_context=_CONTEXT_ID).digest(),
            chunk_key=blake3.blake3(master_key, derive_key_context=_CONTEXT_CHUNK).digest(),
            meta_key=blake3.blake3(master_key, derive_key_context=_CONTEXT_META).digest(),
        )


def new_master_key() -> bytes:
    return os.urandom(MASTER_KEY_SIZE)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not passphrase:
        raise ValueError("the passphrase must not be empty")
    return passphrase


def _kek(passphrase: str | bytes, params: ScryptParams) -> bytes:
    if not params.salt:
        raise ValueError("scrypt parameters need a salt")
    return Scrypt(salt=params.salt, length=32, n=params.n, r=params.r, p=params.p).derive(
        _passphrase_bytes(passphrase)
    )


def wrap_master_key(master_key: bytes, passphrase: str | bytes, params: ScryptParams, aad: bytes) -> bytes:
    """Return nonce || AES-256-GCM(kek, master_key): the only form in which the master key is stored."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(_kek(passphrase, params)).encrypt(nonce, master_key, aad)


def unwrap_master_key(wrapped: bytes, passphrase: str | bytes, params: ScryptParams, aad: bytes) -> bytes:
    kek = _kek(passphrase, params)
    try:
        master = AESGCM(kek).decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase for this repository") from None
    if len(master) != MASTER_KEY_SIZE:
        raise WrongPassphrase("the wrapped master key has the wrong size")
    return master
