"""Restore point manifests: what a restore needs besides the chunks, as a small JSON document.

One manifest per restore point, written last and atomically (the repository's job), so a restore point
is visible only once every chunk and index it refers to is durable. The VM configuration and the
metadata are opaque JSON objects supplied by the caller: the chunkstore stores them, it does not
interpret them.

A restore point holds disks (an image backup), streams (an application backup: one database dump per
database, a tar of a file set), or both. Manifests with streams are written as format 2 and those
without as format 1, byte for byte as before: a reader that predates streams then refuses a manifest it
would misread instead of ignoring its streams (an old GC would otherwise free every stream chunk),
while it keeps reading every disk-only restore point. This reader accepts both formats.

An export (a restore output kept for download) has a manifest of its own kind, ``Export``: streams and
metadata, no disks, no VM configuration, and a ``"type": "export"`` field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Re-exported: ids were validated here before the key layout had a module of its own.
from app.chunkstore.layout import validate_export_id as validate_export_id
from app.chunkstore.layout import validate_restore_point_id as validate_restore_point_id

FORMAT = 1  # disks only (every manifest written before streams existed)
FORMAT_STREAMS = 2  # with a "streams" list
_FORMATS = (FORMAT, FORMAT_STREAMS)
EXPORT_FORMAT = 1
_EXPORT_TYPE = "export"


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


def validate_stream_name(name: str) -> str:
    """Stream names are labels chosen by the agent ("postgresql/sales"), never object keys."""
    if (
        not isinstance(name, str)
        or not 0 < len(name) <= 255
        or not name.isprintable()
        or name != name.strip()
    ):
        raise ValueError(f"invalid stream name {name!r}: 1-255 printable characters, no surrounding blanks")
    return name


@dataclass(frozen=True, slots=True)
class StreamSegment:
    """One object of a stream's chunk index, in stream order (see streamindex.py)."""

    key: str  # backend key of the index segment
    hash: str  # hex BLAKE3 of the stored object (checked on read)
    chunks: int  # entries in the segment
    size: int  # plaintext bytes the segment's chunks add up to

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "blake3": self.hash, "chunks": self.chunks, "size": self.size}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamSegment:
        return cls(
            key=str(data["key"]), hash=str(data["blake3"]), chunks=int(data["chunks"]), size=int(data["size"])
        )


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """One byte stream of a restore point (a database dump, a tar of files) and where its index lives."""

    name: str  # unique within the restore point
    size: int  # bytes
    hash_algorithm: str  # "blake3", or "blake3-keyed" (the chunk-id key) in encrypted repositories
    digest: str  # hex hash of the whole stream, checked at the end of every read
    chunker: dict[str, Any]  # content-defined chunking parameters (cdc.CdcParams.to_json())
    segments: tuple[StreamSegment, ...]
    metadata: dict[str, Any] = field(default_factory=dict)  # opaque: engine, database, dump format...

    @property
    def chunks(self) -> int:
        return sum(s.chunks for s in self.segments)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "size": self.size,
            "hash": {"algorithm": self.hash_algorithm, "digest": self.digest},
            "chunker": self.chunker,
            "index": {"segments": [s.to_json() for s in self.segments], "chunks": self.chunks},
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StreamRecord:
        record = cls(
            name=validate_stream_name(data["name"]),
            size=int(data["size"]),
            hash_algorithm=str(data["hash"]["algorithm"]),
            digest=str(data["hash"]["digest"]),
            chunker=dict(data["chunker"]),
            segments=tuple(StreamSegment.from_json(s) for s in data["index"]["segments"]),
            metadata=dict(data.get("metadata") or {}),
        )
        if sum(s.size for s in record.segments) != record.size:
            raise ValueError(f"stream {record.name!r}: index segments do not add up to its size")
        return record


def _stream_named(streams: tuple[StreamRecord, ...], name: str) -> StreamRecord:
    for s in streams:
        if s.name == name:
            return s
    raise KeyError(name)


def _streams_from_json(items: list[dict[str, Any]]) -> tuple[StreamRecord, ...]:
    streams = tuple(StreamRecord.from_json(s) for s in items)
    if len({s.name for s in streams}) != len(streams):
        raise ValueError("two streams with the same name")
    return streams


def _dump(doc: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no blanks): the same record always serializes to the same bytes."""
    try:
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"vm_config and metadata must be plain JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class RestorePoint:
    id: str
    created_at: datetime
    vm_config: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    disks: tuple[DiskRecord, ...] = ()
    streams: tuple[StreamRecord, ...] = ()

    def disk(self, key: str) -> DiskRecord:
        for d in self.disks:
            if d.key == key:
                return d
        raise KeyError(key)

    def stream(self, name: str) -> StreamRecord:
        return _stream_named(self.streams, name)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {
            "format": FORMAT_STREAMS if self.streams else FORMAT,
            "id": self.id,
            "created_at": self.created_at.astimezone(UTC).isoformat(),
            "vm_config": self.vm_config,
            "metadata": self.metadata,
            "disks": [d.to_json() for d in self.disks],
        }
        if self.streams:
            doc["streams"] = [s.to_json() for s in self.streams]
        return _dump(doc)

    @classmethod
    def from_json(cls, raw: bytes) -> RestorePoint:
        doc = json.loads(raw)
        if doc.get("format") not in _FORMATS:
            raise ValueError(f"unsupported manifest format {doc.get('format')!r}")
        return cls(
            id=validate_restore_point_id(doc["id"]),
            created_at=datetime.fromisoformat(doc["created_at"]),
            vm_config=dict(doc["vm_config"]),
            metadata=dict(doc["metadata"]),
            disks=tuple(DiskRecord.from_json(d) for d in doc["disks"]),
            streams=_streams_from_json(doc.get("streams", [])),
        )


@dataclass(frozen=True, slots=True)
class Export:
    """A restore output kept for download (an archive of the files a user asked for): streams only.

    Written once and published by its manifest like a restore point, but never one: it has its own
    key prefixes (see layout.py), its own format and a ``type`` field, so neither can be read as the
    other even in an unencrypted repository.
    """

    id: str
    created_at: datetime
    metadata: dict[str, Any] = field(default_factory=dict)  # opaque: who asked, what, file names...
    streams: tuple[StreamRecord, ...] = ()

    @property
    def size(self) -> int:
        return sum(s.size for s in self.streams)

    def stream(self, name: str) -> StreamRecord:
        return _stream_named(self.streams, name)

    def to_json(self) -> bytes:
        return _dump(
            {
                "format": EXPORT_FORMAT,
                "type": _EXPORT_TYPE,
                "id": self.id,
                "created_at": self.created_at.astimezone(UTC).isoformat(),
                "metadata": self.metadata,
                "streams": [s.to_json() for s in self.streams],
            }
        )

    @classmethod
    def from_json(cls, raw: bytes) -> Export:
        doc = json.loads(raw)
        if doc.get("type") != _EXPORT_TYPE or doc.get("format") != EXPORT_FORMAT:
            raise ValueError(f"not an export manifest of format {EXPORT_FORMAT}")
        return cls(
            id=validate_export_id(doc["id"]),
            created_at=datetime.fromisoformat(doc["created_at"]),
            metadata=dict(doc["metadata"]),
            streams=_streams_from_json(doc["streams"]),
        )
