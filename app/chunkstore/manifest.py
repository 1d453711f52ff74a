"""Restore point manifests: what a restore needs besides the chunks, as a small JSON document.

One manifest per restore point, written last and atomically (the repository's job), so a restore point
is visible only once every chunk and index it refers to is durable. The VM configuration and the
metadata are opaque JSON objects supplied by the caller: the chunkstore stores them, it does not
interpret them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

FORMAT = 1
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_restore_point_id(restore_point_id: str) -> str:
    """Ids become object keys, so they are restricted to portable characters."""
    if not isinstance(restore_point_id, str) or not _ID.match(restore_point_id):
        raise ValueError(
            f"invalid restore point id {restore_point_id!r}: 1-128 of [A-Za-z0-9._-], not starting with . _ -"
        )
    return restore_point_id


@dataclass(frozen=True, slots=True)
class DiskRecord:
    """One disk of a restore point and where its chunk index lives."""

    key: str  # the caller's stable disk key (vSphere device key, e.g. "2000")
    label: str  # human label ("Hard disk 1")
    size: int  # bytes
    chunk_size: int
    change_id: str | None  # CBT change id of the snapshot this disk was read from, for the next backup
    index_key: str  # backend key of the binary chunk index
    index_hash: str  # hex BLAKE3 of the stored index object (checked on read)
    chunks: int  # entries in the index

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "size": self.size,
            "chunk_size": self.chunk_size,
            "change_id": self.change_id,
            "index": {"key": self.index_key, "blake3": self.index_hash, "chunks": self.chunks},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiskRecord:
        index = data["index"]
        return cls(
            key=str(data["key"]),
            label=str(data["label"]),
            size=int(data["size"]),
            chunk_size=int(data["chunk_size"]),
            change_id=data.get("change_id"),
            index_key=str(index["key"]),
            index_hash=str(index["blake3"]),
            chunks=int(index["chunks"]),
        )


@dataclass(frozen=True, slots=True)
class RestorePoint:
    id: str
    created_at: datetime
    vm_config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    disks: tuple[DiskRecord, ...] = ()

    def disk(self, key: str) -> DiskRecord:
        for d in self.disks:
            if d.key == key:
                return d
        raise KeyError(key)

    def to_json(self) -> bytes:
        doc = {
            "format": FORMAT,
            "id": self.id,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "vm_config": self.vm_config,
            "metadata": self.metadata,
            "disks": [d.to_json() for d in self.disks],
        }
        try:
            return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"vm_config and metadata must be plain JSON: {exc}") from None

    @classmethod
    def from_json(cls, raw: bytes) -> RestorePoint:
        doc = json.loads(raw)
        if doc.get("format") != FORMAT:
            raise ValueError(f"unsupported manifest format {doc.get('format')!r}")
        return cls(
            id=validate_restore_point_id(doc["id"]),
            created_at=datetime.fromisoformat(doc["created_at"]),
            vm_config=dict(doc["vm_config"]),
            metadata=dict(doc["metadata"]),
            disks=tuple(DiskRecord.from_json(d) for d in doc["disks"]),
        )
