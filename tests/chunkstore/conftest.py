"""Fixtures for the chunkstore tests: backends, repositories and synthetic disks.

Repositories here use small chunks (64 KiB) so that multi-chunk behaviour shows up with small data, a
cheap scrypt cost and no fsync: speed, not durability, is what these tests need (the conformance suite
keeps the durable default).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.chunkstore import (
    Backend,
    CdcParams,
    Export,
    FsBackend,
    Repository,
    RestorePoint,
    ScryptParams,
    iter_stream,
)
from tests.support.seaweed import running_server, seaweed  # noqa: F401 (seaweed: a fixture)

CHUNK = 64 * 1024
#: Content-defined chunks of 4-64 KiB (16 KiB on average): many chunks out of a few hundred KiB.
SMALL_CDC = CdcParams(min_size=4 * 1024, avg_size=16 * 1024, max_size=64 * 1024)
PASSPHRASE = "correct horse battery staple"
FAST_KDF = ScryptParams(n=2**10, r=8, p=1)

BACKENDS = ["fs", "s3"]


def make_backend(kind: str, root: Path, *, durable: bool = False) -> Backend:
    """A fresh backend of ``kind``; for S3, a bucket of its own on the session's SeaweedFS (one per root)."""
    if kind == "fs":
        return FsBackend(root, durable=durable)
    if kind == "s3":
        return running_server().backend_for(root)
    raise AssertionError(kind)


@pytest.fixture(params=BACKENDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    if request.param == "s3":
        request.getfixturevalue("seaweed")  # started once per session, on first use
    return str(request.param)


@pytest.fixture(params=["plain", "encrypted"])
def repo(request: pytest.FixtureRequest, tmp_path: Path) -> Repository:
    return new_repo(tmp_path / "repo", encrypted=request.param == "encrypted")


def new_repo(root: Path, *, encrypted: bool = False, chunk_size: int = CHUNK) -> Repository:
    return Repository.create(
        FsBackend(root, durable=False),
        passphrase=PASSPHRASE if encrypted else None,
        chunk_size=chunk_size,
        kdf=FAST_KDF,
    )


class BytesReader:
    """A disk in memory that counts its reads (thread-safe), like a CBT-aware transport would."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.data)

    def read_at(self, offset: int, length: int) -> bytes:
        with self._lock:
            self.calls.append((offset, length))
        return self.data[offset : offset + length]


def disk_bytes(size: int, *, seed: int = 1, kinds: str = "zrt", run: int = 3 * CHUNK // 2) -> bytes:
    """Runs of zeros (z), random (r) and text-like compressible (t) data; run lengths vary up to ``run``."""
    rng = random.Random(seed)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(300)]
    parts: list[bytes] = []
    total = 0
    while total < size:
        n = min(size - total, rng.randint(1, run))
        kind = rng.choice(kinds)
        if kind == "z":
            parts.append(bytes(n))
        elif kind == "r":
            parts.append(rng.randbytes(n))
        else:
            text = b" ".join(rng.choices(words, k=n // 4 + 1))
            parts.append(text[:n])
        total += n
    return b"".join(parts)


@pytest.fixture
def make_disk() -> Callable[..., bytes]:
    return disk_bytes


def stored_chunk_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "chunks").rglob("*") if p.is_file() and not p.name.startswith("."))


def iter_files(root: Path) -> Iterator[Path]:
    for dirpath, _, files in os.walk(root):
        for name in files:
            yield Path(dirpath) / name


def read_stream(repo: Repository, owner: RestorePoint | Export | str, name: str) -> bytes:
    return b"".join(iter_stream(repo, owner, name, workers=2))


def index_keys(root: Path, prefix: str) -> set[str]:
    """Keys of the objects under ``prefix`` (e.g. ``indexes/rp-1``) of a filesystem repository."""
    base = root / prefix
    return {str(p.relative_to(root)) for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")}
