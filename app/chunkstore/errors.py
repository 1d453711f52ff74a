"""Errors of the backup repository.

Every error a caller may want to react to has its own type, and the chunk errors carry the chunk id
(bytes, plus its hex form in the message) so that a restore or a verify can say exactly which chunk is
bad and an operator can find the file.
"""

from __future__ import annotations


class ChunkstoreError(Exception):
    """Base of every error raised by the chunkstore."""


class RepositoryError(ChunkstoreError):
    """The repository as a whole cannot be used (no config, unknown format, bad parameters)."""


class RepositoryExists(RepositoryError):
    """A repository already lives at this location; creating another would orphan its data."""


class RepositoryNotFound(RepositoryError):
    """No repository config at this location."""


class WrongPassphrase(RepositoryError):
    """The passphrase does not unwrap the repository's master key (or the config was tampered with)."""


class ObjectMissing(ChunkstoreError):
    """A backend object (config, manifest, index) does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(f"object {key!r} does not exist")
        self.key = key


class ObjectDamaged(ChunkstoreError):
    """A metadata object (manifest, index, config) exists but cannot be authenticated or parsed."""

    def __init__(self, key: str, detail: str) -> None:
        super().__init__(f"object {key!r} is damaged: {detail}")
        self.key = key
        self.detail = detail


class ChunkError(ChunkstoreError):
    """A chunk cannot be read back as the content it is named after."""

    def __init__(self, chunk_id: bytes, message: str) -> None:
        super().__init__(message)
        self.chunk_id = chunk_id

    @property
    def chunk_hex(self) -> str:
        return self.chunk_id.hex()


class ChunkMissing(ChunkError):
    """A chunk referenced by an index is not in the repository."""

    def __init__(self, chunk_id: bytes) -> None:
        super().__init__(chunk_id, f"chunk {chunk_id.hex()} is missing")


class ChunkDamaged(ChunkError):
    """A chunk exists but fails authentication, decompression or the hash check."""

    def __init__(self, chunk_id: bytes, detail: str) -> None:
        super().__init__(chunk_id, f"chunk {chunk_id.hex()} is damaged: {detail}")
        self.detail = detail


class RestorePointNotFound(ChunkstoreError):
    def __init__(self, restore_point_id: str) -> None:
        super().__init__(f"restore point {restore_point_id!r} does not exist")
        self.restore_point_id = restore_point_id


class RestorePointExists(ChunkstoreError):
    def __init__(self, restore_point_id: str) -> None:
        super().__init__(f"restore point {restore_point_id!r} already exists")
        self.restore_point_id = restore_point_id


class BackupCancelled(ChunkstoreError):
    """The caller's cancel event was set; nothing was committed (no manifest is written by a backup)."""


class StreamDamaged(ChunkstoreError):
    """A stream read back does not match its record: wrong size or wrong whole-stream hash.

    Every chunk is verified on its own before this can be noticed, so this means the index and the
    record disagree (a bug, or tampering with an unencrypted repository), and the bytes already handed
    on must not be trusted: a restore that sees it has failed.
    """

    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"stream {name!r} is damaged: {detail}")
        self.name = name
        self.detail = detail


class UnsafeArchiveMember(ChunkstoreError):
    """A file-set archive names a path that would land outside the restore target."""

    def __init__(self, member: str, detail: str) -> None:
        super().__init__(f"refusing archive member {member!r}: {detail}")
        self.member = member
        self.detail = detail


class StreamNotFound(ChunkstoreError):
    """No stream of that name in the restore point (or export, ``kind="export"``) read."""

    def __init__(self, owner_id: str, name: str, *, kind: str = "restore point") -> None:
        super().__init__(f"{kind} {owner_id!r} has no stream {name!r}")
        self.owner_id = owner_id
        self.kind = kind
        self.name = name

    @property
    def restore_point_id(self) -> str | None:
        return self.owner_id if self.kind == "restore point" else None


class ExportNotFound(ChunkstoreError):
    def __init__(self, export_id: str) -> None:
        super().__init__(f"export {export_id!r} does not exist")
        self.export_id = export_id


class ExportExists(ChunkstoreError):
    def __init__(self, export_id: str) -> None:
        super().__init__(f"export {export_id!r} already exists")
        self.export_id = export_id
