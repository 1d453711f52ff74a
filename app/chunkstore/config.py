"""The repository's self-description, stored in clear as JSON under the key ``config``.

It must be readable before any key is known (it carries the KDF parameters), so it holds nothing secret:
the master key appears only wrapped. Everything needed to read the repository with no other source of
truth is here or in the manifests.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.chunkstore.keys import ScryptParams

FORMAT = 1
HASH_PLAIN = "blake3"
HASH_KEYED = "blake3-keyed"
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 64 << 20
#: Largest stream chunk (content-defined, see cdc.py), whatever the repository's disk chunk size: stream
#: chunk sizes are chosen for dumps, not for CBT, and a repository made with small disk chunks must still
#: take them. Also the decompression bound of every chunk.
MAX_STREAM_CHUNK_SIZE = 8 << 20


def check_chunk_size(chunk_size: int) -> int:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size % 4096:
        raise ValueError(f"chunk size must be a multiple of 4 KiB between 4 KiB and 64 MiB, got {chunk_size}")
    return chunk_size


@dataclass(frozen=True, slots=True)
class EncryptionConfig:
    kdf: ScryptParams
    wrapped_key: bytes  # nonce || AES-256-GCM(scrypt(passphrase), master key), aad = repository id


@dataclass(frozen=True, slots=True)
class RepositoryConfig:
    id: str
    created_at: datetime
    chunk_size: int
    compression_level: int
    encryption: EncryptionConfig | None

    @property
    def hash(self) -> str:
        return HASH_KEYED if self.encryption else HASH_PLAIN

    def to_json(self) -> bytes:
        enc: dict[str, Any] | None = None
        if self.encryption is not None:
            kdf = self.encryption.kdf
            enc = {
                "algorithm": "aes-256-gcm",
                "kdf": {"name": "scrypt", "n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": _b64(kdf.salt)},
                "wrapped_key": _b64(self.encryption.wrapped_key),
            }
        doc = {
            "format": FORMAT,
            "id": self.id,
            "created_at": self.created_at.isoformat(),
            "chunk_size": self.chunk_size,
            "hash": self.hash,
            "compression": {"algorithm": "zstd", "level": self.compression_level},
            "encryption": enc,
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> RepositoryConfig:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unsupported repository format {doc.get('format')!r}")
        if doc["compression"]["algorithm"] != "zstd":
            raise ValueError(f"unsupported compression {doc['compression']['algorithm']!r}")
        encryption = None
        enc = doc.get("encryption")
        if enc is not None:
            if enc["algorithm"] != "aes-256-gcm" or enc["kdf"]["name"] != "scrypt":
                raise ValueError("unsupported encryption parameters")
            kdf = enc["kdf"]
            encryption = EncryptionConfig(
                kdf=ScryptParams(n=int(kdf["n"]), r=int(kdf["r"]), p=int(kdf["p"]), salt=_unb64(kdf["salt"])),
                wrapped_key=_unb64(enc["wrapped_key"]),
            )
        config = cls(
            id=str(doc["id"]),
            created_at=datetime.fromisoformat(doc["created_at"]),
            chunk_size=check_chunk_size(int(doc["chunk_size"])),
            compression_level=int(doc["compression"]["level"]),
            encryption=encryption,
        )
        if doc.get("hash") != config.hash:
            raise ValueError(f"hash {doc.get('hash')!r} does not match the encryption setting")
        return config


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
