"""How a chunk's plaintext becomes the bytes stored in the backend, and back, with verification.

Stored chunk layout (all integers single bytes)::

    version=1 | flags | [nonce(12) | AES-256-GCM(payload) + tag(16)]   when flags & ENCRYPTED
    version=1 | flags | payload                                         otherwise

``payload`` is the zstd frame of the plaintext when flags & ZSTD, else the plaintext itself (kept raw when
compression would not shrink it: random or already-compressed data). The associated data of the AEAD is
the two header bytes plus the chunk id, so a stored chunk cannot be renamed to another id or have its
flags flipped without failing authentication. Decoding always ends with re-hashing the plaintext and
comparing with the id: the last line of defence against bit rot in unencrypted repositories.
"""

from __future__ import annotations

import os
import threading

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.chunkstore.backend import BytesLike
from app.chunkstore.errors import ChunkDamaged, ObjectDamaged
from app.chunkstore.ids import ChunkHasher

VERSION = 1
FLAG_ZSTD = 0x01
FLAG_ENCRYPTED = 0x02
NONCE_SIZE = 12
TAG_SIZE = 16
_HEADER = 2

# zstd level 1: on a 2-core proxy level 3 cost 60% more CPU for 9% less stored (docs/benchmarks.md).
DEFAULT_LEVEL = 1
_HAS_ENCRYPT_INTO = hasattr(AESGCM, "encrypt_into")
MIN_LEVEL = -7
MAX_LEVEL = 22


def check_level(level: int) -> int:
    if not MIN_LEVEL <= level <= MAX_LEVEL or level == 0:
        raise ValueError(f"zstd level must be in {MIN_LEVEL}..{MAX_LEVEL} and not 0, got {level}")
    return level


class ChunkCodec:
    """Compress/encrypt chunks for storage and decode+verify them. Thread-safe.

    zstd (de)compressors are not thread-safe, so each thread gets its own; AESGCM objects are.
    """

    def __init__(self, hasher: ChunkHasher, *, level: int, key: bytes | None, max_chunk_size: int) -> None:
        self._hasher = hasher
        self._level = check_level(level)
        self._aead = AESGCM(key) if key is not None else None
        self._max = max_chunk_size
        self._local = threading.local()

    @property
    def encrypted(self) -> bool:
        return self._aead is not None

    def _compressor(self) -> zstandard.ZstdCompressor:
        c: zstandard.ZstdCompressor | None = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self._level, write_content_size=True)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d: zstandard.ZstdDecompressor | None = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, chunk_id: bytes, plaintext: BytesLike) -> bytearray:
        """Return the stored form of ``plaintext``; the caller computed ``chunk_id`` from it."""
        compressed = self._compressor().compress(plaintext)
        if len(compressed) < len(plaintext):
            payload: BytesLike = compressed
            flags = FLAG_ZSTD
        else:
            payload = plaintext
            flags = 0
        if self._aead is None:
            out = bytearray(_HEADER + len(payload))
            out[0] = VERSION
            out[1] = flags
            out[_HEADER:] = payload
            return out
        flags |= FLAG_ENCRYPTED
        header = bytes((VERSION, flags))
        nonce = os.urandom(NONCE_SIZE)
        if not _HAS_ENCRYPT_INTO:  # older cryptography: one extra copy of the ciphertext
            return bytearray(header + nonce + self._aead.encrypt(nonce, payload, header + chunk_id))
        out = bytearray(_HEADER + NONCE_SIZE + len(payload) + TAG_SIZE)
        out[:_HEADER] = header
        out[_HEADER : _HEADER + NONCE_SIZE] = nonce
        self._aead.encrypt_into(nonce, payload, header + chunk_id, memoryview(out)[_HEADER + NONCE_SIZE :])
        return out

    def decode(self, chunk_id: bytes, stored: bytes) -> bytes:
        """Return the verified plaintext or raise ``ChunkDamaged`` naming the chunk."""
        if len(stored) < _HEADER or stored[0] != VERSION:
            raise ChunkDamaged(chunk_id, "unknown chunk format")
        flags = stored[1]
        view = memoryview(stored)
        payload: BytesLike
        if flags & FLAG_ENCRYPTED:
            if self._aead is None:
                raise ChunkDamaged(chunk_id, "encrypted chunk in an unencrypted repository")
            if len(stored) < _HEADER + NONCE_SIZE + TAG_SIZE:
                raise ChunkDamaged(chunk_id, "truncated")
            try:
                payload = self._aead.decrypt(
                    view[_HEADER : _HEADER + NONCE_SIZE],
                    view[_HEADER + NONCE_SIZE :],
                    stored[:_HEADER] + chunk_id,
                )
            except InvalidTag:
                raise ChunkDamaged(chunk_id, "authentication failed") from None
        elif self._aead is not None:
            # Refuse plaintext chunks in an encrypted repository: someone could plant content.
            raise ChunkDamaged(chunk_id, "unencrypted chunk in an encrypted repository")
        else:
            payload = view[_HEADER:]
        if flags & FLAG_ZSTD:
            try:
                plaintext = self._decompressor().decompress(payload, max_output_size=self._max)
            except zstandard.ZstdError as exc:
                raise ChunkDamaged(chunk_id, f"cannot decompress: {exc}") from None
        else:
            plaintext = bytes(payload)
        if len(plaintext) > self._max or self._hasher(plaintext) != chunk_id:
            raise ChunkDamaged(chunk_id, "content does not match its id")
        return plaintext


class MetaCodec:
    """Seals metadata objects (manifests, indexes) in encrypted repositories; identity otherwise.

    The object key is associated data, so one restore point's manifest cannot be swapped for another's.
    Unencrypted repositories keep manifests as plain JSON on purpose: self-describing, readable by hand.
    """

    def __init__(self, key: bytes | None) -> None:
        self._aead = AESGCM(key) if key is not None else None

    def seal(self, object_key: str, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        nonce = os.urandom(NONCE_SIZE)
        return bytes((VERSION,)) + nonce + self._aead.encrypt(nonce, plaintext, _meta_aad(object_key))

    def open(self, object_key: str, stored: bytes) -> bytes:
        if self._aead is None:
            return stored
        if len(stored) < 1 + NONCE_SIZE + TAG_SIZE or stored[0] != VERSION:
            raise ObjectDamaged(object_key, "unknown sealed-object format")
        view = memoryview(stored)
        try:
            return self._aead.decrypt(view[1 : 1 + NONCE_SIZE], view[1 + NONCE_SIZE :], _meta_aad(object_key))
        except InvalidTag:
            raise ObjectDamaged(object_key, "authentication failed") from None


def _meta_aad(object_key: str) -> bytes:
    return b"vm-recovery meta:" + object_key.encode()
