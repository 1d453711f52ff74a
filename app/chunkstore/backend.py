"""The narrow storage contract every repository backend implements.

The repository only needs whole-object puts and gets under slash-separated keys, existence checks in
batches (so that a dedup check against S3 can be one round of parallel HEADs rather than a listing),
deletes, prefix listings and a modification time (GC's grace period). Keeping the contract this small is
what lets one conformance suite (tests/chunkstore/test_backend_conformance.py) cover every backend
(restic's internal/backend approach).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

BytesLike = bytes | bytearray | memoryview

# Keys are relative, slash-separated, made of portable characters; no empty, "." or ".." segments and
# no segment starting with "." (backends may use dot-names for their own temporary files).
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ``ValueError``.

    Backends call this before touching storage so that a key can never escape the repository root.
    """
    if not key or len(key) > 512:
        raise ValueError(f"invalid object key {key!r}")
    for segment in key.split("/"):
        if not _SEGMENT.match(segment):
            raise ValueError(f"invalid object key {key!r}")
    return key


@dataclass(frozen=True, slots=True)
class ObjectStat:
    key: str
    size: int
    modified: datetime  # timezone-aware (UTC)


@runtime_checkable
class Backend(Protocol):
    """Object storage for one repository. Implementations must be safe to call from many threads."""

    def put(self, key: str, data: BytesLike) -> None:
        """Store ``data`` under ``key`` atomically: readers see the old object, or the whole new one."""
        ...

    def get(self, key: str) -> bytes:
        """Return the whole object; raise ``ObjectMissing`` if there is none."""
        ...

    def exists(self, key: str) -> bool: ...

    def exists_many(self, keys: Iterable[str]) -> set[str]:
        """Return the subset of ``keys`` that exist (one batch; backends may parallelise)."""
        ...

    def touch_many(self, keys: Iterable[str]) -> set[str]:
        """Mark objects as in use now (their modification time becomes now); return those that exist.

        Garbage collection spares unreferenced objects younger than its grace period, so a backup
        that finds a chunk already stored (and will reference it) touches it: a sweep running
        meanwhile cannot delete it under the backup's feet (Proxmox Backup Server does the same).
        """
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error (idempotent, like S3)."""
        ...

    def delete_if_older(self, key: str, cutoff: datetime) -> ObjectStat | None:
        """GC's sweep: remove the object if it was last modified at or before ``cutoff``. Returns
        its stat as the decision saw it (None: missing): removed if and only if ``modified`` is
        at or before ``cutoff``.

        A ``touch_many`` that reports the object present must keep it: a backup that found it
        stored references it without storing it again. A backend makes the check and the removal
        one step where it can (the filesystem does); where it cannot (S3 has no delete
        conditional on the modification time) the window is the time between two requests.
        """
        ...

    def recover_interrupted_sweeps(self) -> int:
        """Put back under their names the objects a sweep had moved aside when its process
        stopped (only a backend whose ``delete_if_older`` moves objects aside leaves any); return
        how many. Putting one back is always safe: a sweep that still wants it gone removes it
        on its next pass, and one a backup touched meanwhile must stay."""
        ...

    def list(self, prefix: str) -> Iterator[str]:
        """Yield every key starting with ``prefix`` (any depth, no particular order)."""
        ...

    def stat(self, key: str) -> ObjectStat:
        """Size and modification time; raise ``ObjectMissing`` if there is no such object."""
        ...
