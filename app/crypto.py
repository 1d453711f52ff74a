"""Encryption of secrets at rest (vCenter credentials) with the server's key.

The server key comes from ``VMR_SECRET_KEY`` or, when unset, from ``<data_dir>/secret.key``,
created with 0600 permissions on first start. The Fernet key is derived from it with HKDF,
so any high-entropy string works as ``VMR_SECRET_KEY``.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.settings import Settings

_HKDF_INFO = b"vmrecovery/credentials/v1"


class SecretBoxError(Exception):
    """A stored secret cannot be decrypted: the server key changed or the data is damaged."""


class SecretBox:
    def __init__(self, server_key: str) -> None:
        derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            server_key.encode()
        )
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))

    def encrypt(self, plaintext: bytes) -> bytes:
        return self._fernet.encrypt(plaintext)

    def decrypt(self, token: bytes) -> bytes:
        try:
            return self._fernet.decrypt(token)
        except InvalidToken as exc:
            raise SecretBoxError(
                "stored credentials cannot be decrypted with the current server key "
                "(VMR_SECRET_KEY or secret.key changed?); re-enter them"
            ) from exc


def load_or_create_server_key(settings: Settings) -> str:
    if settings.secret_key is not None:
        value = settings.secret_key.get_secret_value()
        if len(value) < 16:
            raise ValueError("VMR_SECRET_KEY must be at least 16 characters long")
        return value
    path: Path = settings.resolved_data_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    # O_EXCL: two processes starting at once must not both write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return value
