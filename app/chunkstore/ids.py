"""Chunk ids: BLAKE3 of the plaintext, keyed when the repository is encrypted.

An unkeyed hash of the plaintext would let anyone holding the repository confirm whether a known block
(a known file, a known OS image) is in a backup; keying the hash with a secret derived from the master
key removes that oracle while keeping dedup (same plaintext, same key, same id).
"""

from __future__ import annotations

import blake3

from app.chunkstore.backend import BytesLike

ID_SIZE = 32
# Sentinel for an all-zero chunk in an index. Zero chunks are never stored; a BLAKE3 output of 32 zero
# bytes is not a practical possibility.
ZERO_ID = bytes(ID_SIZE)


class ChunkHasher:
    """Computes chunk ids. Stateless apart from the key, so one instance serves every thread."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != 32:
            raise ValueError("the chunk id key must be 32 bytes")
        self._key = key

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def incremental(self) -> blake3.blake3:
        """A fresh hasher for data that arrives in pieces (whole streams); same key as chunk ids."""
        if self._key is None:
            return blake3.blake3()
        return blake3.blake3(key=self._key)

    def __call__(self, data: BytesLike) -> bytes:
        # blake3 releases the GIL on large inputs, so hashing scales across the pipeline's threads.
        if self._key is None:
            return blake3.blake3(data).digest()
        return blake3.blake3(data, key=self._key).digest()


def chunk_key(chunk_id: bytes) -> str:
    """Backend key of a chunk: 256 fan-out directories keep directory sizes sane on filesystems."""
    h = chunk_id.hex()
    return f"chunks/{h[:2]}/{h}"


def parse_chunk_key(key: str) -> bytes | None:
    """Inverse of ``chunk_key``; ``None`` for keys that are not chunk keys (left alone by GC)."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "chunks" or len(parts[2]) != 2 * ID_SIZE:
        return None
    try:
        chunk_id = bytes.fromhex(parts[2])
    except ValueError:
        return None
    if parts[1] != parts[2][:2] or chunk_id == ZERO_ID:
        return None
    return chunk_id
