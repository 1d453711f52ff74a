"""The backup repository: chunks, indexes, restore points and exports on a ``Backend``.

Named ``repository`` inside ``app/chunkstore`` only; elsewhere in the project ``repository.py`` means SQL.

Layout (keys)::

    config                            repository self-description (JSON, clear; master key only wrapped)
    chunks/<2 hex>/<64 hex>           one stored chunk (see codec.py), named by its id
    indexes/<restore point>/<n>       binary chunk index of disk n of a restore point (see index.py)
    indexes/<restore point>/s<n>-<m>  segment m of the chunk index of stream n (see streamindex.py)
    restore-points/<restore point>    manifest (JSON; AES-GCM sealed in encrypted repositories)
    export-indexes/<export>/s<n>-<m>  segment m of the chunk index of stream n of an export
    exports/<export>                  export manifest (JSON; sealed like restore point manifests)

Writes happen in the order chunks → indexes → manifest; the manifest's atomic put is the commit point.

Exports (restore outputs kept for users to download, such as an archive of restored files) share the
chunks, and so dedup and GC, with restore points, but nothing else: their manifests and index objects
sit under their own top-level prefixes (``exports/``, ``export-indexes/``), so listing restore points
(``restore-points/``) or sweeping their indexes (``indexes/``) never meets an export, an export may
carry the id of a restore point without either touching the other, and a filesystem never needs
``exports/<id>`` to be a file and a directory at once. An export is written once, like a restore point.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import blake3

from app.chunkstore.backend import Backend, BytesLike, ObjectStat
from app.chunkstore.codec import DEFAULT_LEVEL, ChunkCodec, MetaCodec, check_level
from app.chunkstore.config import (
    MAX_STREAM_CHUNK_SIZE,
    EncryptionConfig,
    RepositoryConfig,
    check_chunk_size,
)
from app.chunkstore.errors import (
    ChunkMissing,
    ChunkstoreError,
    ExportExists,
    ExportNotFound,
    ObjectDamaged,
    ObjectMissing,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    RestorePointExists,
    RestorePointNotFound,
    WrongPassphrase,
)
from app.chunkstore.ids import ZERO_ID, ChunkHasher, chunk_key, parse_chunk_key
from app.chunkstore.index import DiskIndex, IndexFormatError
from app.chunkstore.keys import (
    RepositoryKeys,
    ScryptParams,
    new_master_key,
    unwrap_master_key,
    wrap_master_key,
)
from app.chunkstore.layout import (
    CONFIG_KEY,
    EXPORT_INDEX_PREFIX,
    EXPORT_PREFIX,
    INDEX_PREFIX,
    MANIFEST_PREFIX,
    export_index_prefix,
    export_key,
    ids_under,
    index_prefix,
    manifest_key,
)
from app.chunkstore.manifest import DiskRecord, Export, RestorePoint, StreamSegment
from app.chunkstore.streamindex import StreamSegmentIndex
from app.chunkstore.writers import ExportWriter, RestorePointWriter

__all__ = [
    "CONFIG_KEY",
    "DEFAULT_CHUNK_SIZE",
    "EXPORT_INDEX_PREFIX",
    "EXPORT_PREFIX",
    "INDEX_PREFIX",
    "MANIFEST_PREFIX",
    "ExportWriter",
    "Repository",
    "RestorePointWriter",
    "export_index_prefix",
    "export_key",
    "index_prefix",
    "manifest_key",
]

_M = TypeVar("_M")
# 1 MiB: measured in docs/benchmarks.md (scattered 4 KiB guest writes make bigger chunks store far more
# on every incremental backup, for little throughput gain).
DEFAULT_CHUNK_SIZE = 1 << 20
# How many ids one exists_many() call checks: one round trip on S3-like backends.
EXISTS_BATCH = 256
# Bound on the per-process cache of ids known to be present (~100 bytes each).
KNOWN_CACHE_MAX = 1 << 17
#: Ids known present are asked (and touched) again after this long, well inside any GC grace
#: period, so a long-running proxy never relies on a chunk that a sweep could have removed.
KNOWN_TTL_S = 1800.0


def _wrap_aad(repository_id: str) -> bytes:
    return b"vm-recovery master key:" + repository_id.encode()


class Repository:
    """An opened repository. Thread-safe: backup and restore pipelines share one instance."""

    def __init__(self, backend: Backend, config: RepositoryConfig, keys: RepositoryKeys | None) -> None:
        # Use Repository.create() or Repository.open().
        self.backend = backend
        self.config = config
        self._keys = keys
        self._hasher = ChunkHasher(keys.id_key if keys else None)
        self._codec = ChunkCodec(
            self._hasher,
            level=config.compression_level,
            key=keys.chunk_key if keys else None,
            max_chunk_size=max(config.chunk_size, MAX_STREAM_CHUNK_SIZE),
        )
        self._meta = MetaCodec(keys.meta_key if keys else None)
        self._known: dict[bytes, float] = {}
        self._known_lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        backend: Backend,
        *,
        passphrase: str | bytes | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        compression_level: int = DEFAULT_LEVEL,
        kdf: ScryptParams | None = None,
    ) -> Repository:
        """Initialise a new repository; encrypted iff a passphrase is given."""
        check_chunk_size(chunk_size)
        check_level(compression_level)
        if backend.exists(CONFIG_KEY):
            raise RepositoryExists(f"a repository already exists in {backend!r}")
        repository_id = uuid.uuid4().hex
        keys = None
        encryption = None
        if passphrase is not None:
            master = new_master_key()
            params = (kdf or ScryptParams()).with_salt()
            wrapped = wrap_master_key(master, passphrase, params, _wrap_aad(repository_id))
            encryption = EncryptionConfig(kdf=params, wrapped_key=wrapped)
            keys = RepositoryKeys.derive(master)
        config = RepositoryConfig(
            id=repository_id,
            created_at=datetime.now(UTC),
            chunk_size=chunk_size,
            compression_level=compression_level,
            encryption=encryption,
        )
        backend.put(CONFIG_KEY, config.to_json())
        return cls(backend, config, keys)

    @classmethod
    def create_copy_target(
        cls,
        backend: Backend,
        source: Repository,
        *,
        source_passphrase: str | bytes | None = None,
        passphrase: str | bytes | None = None,
        kdf: ScryptParams | None = None,
    ) -> Repository:
        """A new repository whose objects are byte-compatible with ``source``'s (an offsite copy).

        It shares the source's master key (wrapped under its own passphrase, with its own id), chunk
        size and compression, so chunk ids are equal on both sides and stored objects, indexes and
        manifests can be copied as they are: no decryption, recompression or re-hashing on the way,
        and the dedup check against it is the same id lookup as onsite. Unencrypted sources make
        unencrypted targets.
        """
        if backend.exists(CONFIG_KEY):
            raise RepositoryExists(f"a repository already exists in {backend!r}")
        enc = source.config.encryption
        repository_id = uuid.uuid4().hex
        encryption = None
        keys = None
        if enc is not None:
            if source_passphrase is None or passphrase is None:
                raise WrongPassphrase("copying an encrypted repository needs its passphrase and a new one")
            master = unwrap_master_key(
                enc.wrapped_key, source_passphrase, enc.kdf, _wrap_aad(source.config.id)
            )
            params = (kdf or ScryptParams()).with_salt()
            encryption = EncryptionConfig(
                kdf=params, wrapped_key=wrap_master_key(master, passphrase, params, _wrap_aad(repository_id))
            )
            keys = RepositoryKeys.derive(master)
        elif passphrase is not None:
            raise RepositoryError("the source repository is not encrypted; its copy cannot be either")
        config = RepositoryConfig(
            id=repository_id,
            created_at=datetime.now(UTC),
            chunk_size=source.config.chunk_size,
            compression_level=source.config.compression_level,
            encryption=encryption,
        )
        backend.put(CONFIG_KEY, config.to_json())
        return cls(backend, config, keys)

    def compatible_with(self, other: Repository) -> bool:
        """Whether objects of ``other`` are valid in this repository as they are (same keys)."""
        probe = b"vmrecovery copy probe"
        if self.config.chunk_size != other.config.chunk_size or self.chunk_id(probe) != other.chunk_id(probe):
            return False
        try:
            return self._meta.open("probe", other._meta.seal("probe", probe)) == probe
        except ObjectDamaged:
            return False

    @classmethod
    def open(cls, backend: Backend, *, passphrase: str | bytes | None = None) -> Repository:
        try:
            raw = backend.get(CONFIG_KEY)
        except ObjectMissing:
            raise RepositoryNotFound(f"no repository in {backend!r}") from None
        try:
            config = RepositoryConfig.from_json(raw)
        except (ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"unreadable repository config: {exc}") from None
        keys = None
        if config.encryption is not None:
            if passphrase is None:
                raise WrongPassphrase("the repository is encrypted: a passphrase is required")
            master = unwrap_master_key(
                config.encryption.wrapped_key, passphrase, config.encryption.kdf, _wrap_aad(config.id)
            )
            keys = RepositoryKeys.derive(master)
        return cls(backend, config, keys)

    def change_passphrase(self, new_passphrase: str | bytes, old_passphrase: str | bytes) -> None:
        """Rewrap the master key under a new passphrase; chunks and manifests are untouched."""
        enc = self.config.encryption
        if enc is None:
            raise RepositoryError("the repository is not encrypted")
        master = unwrap_master_key(enc.wrapped_key, old_passphrase, enc.kdf, _wrap_aad(self.config.id))
        params = enc.kdf.with_salt()
        wrapped = wrap_master_key(master, new_passphrase, params, _wrap_aad(self.config.id))
        config = RepositoryConfig(
            id=self.config.id,
            created_at=self.config.created_at,
            chunk_size=self.config.chunk_size,
            compression_level=self.config.compression_level,
            encryption=EncryptionConfig(kdf=params, wrapped_key=wrapped),
        )
        self.backend.put(CONFIG_KEY, config.to_json())
        self.config = config

    # -- properties ------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def chunk_size(self) -> int:
        return self.config.chunk_size

    @property
    def encrypted(self) -> bool:
        return self._keys is not None

    def __repr__(self) -> str:
        return f"Repository(id={self.id!r}, backend={self.backend!r}, encrypted={self.encrypted})"

    # -- chunks ----------------------------------------------------------------------------------

    @property
    def max_chunk_size(self) -> int:
        """Largest chunk ``put_chunk`` takes: the disk chunk size, or a stream chunk's bound if larger."""
        return max(self.config.chunk_size, MAX_STREAM_CHUNK_SIZE)

    def chunk_id(self, data: BytesLike) -> bytes:
        return self._hasher(data)

    @property
    def stream_hash_algorithm(self) -> str:
        """What ``stream_hasher`` computes, as recorded in stream records (the config's chunk hash)."""
        return self.config.hash

    def stream_hasher(self) -> blake3.blake3:
        """Incremental hash of a whole stream: the chunk-id hash (keyed in encrypted repositories).

        Keyed for the same reason chunk ids are: a plain hash of a dump in a manifest or a catalog
        would tell anyone who can guess the dump that it is there.
        """
        return self._hasher.incremental()

    def missing(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Ids among ``chunk_ids`` that the repository does not hold (the dedup check).

        Asks the backend in batches of ``EXISTS_BATCH`` and only about ids not already known present in
        this process, so a backup never lists the store.
        """
        fresh_after = time.monotonic() - KNOWN_TTL_S
        with self._known_lock:
            # An id never seen is unknown whatever the clock says: monotonic time starts near zero at
            # boot, so a default of 0.0 would count every id as "recently seen" on a fresh machine.
            wanted = dict.fromkeys(chunk_ids)
            unknown = [c for c in wanted if c != ZERO_ID and not self._fresh(c, fresh_after)]
        absent: set[bytes] = set()
        for start in range(0, len(unknown), EXISTS_BATCH):
            batch = unknown[start : start + EXISTS_BATCH]
            keys = {chunk_key(c): c for c in batch}
            # Present chunks are touched: the backup about to reference them keeps them young.
            present = self.backend.touch_many(keys)
            self._remember(keys[k] for k in present)
            absent.update(c for k, c in keys.items() if k not in present)
        return absent

    def touch_chunks(self, chunk_ids: Iterable[bytes]) -> set[bytes]:
        """Mark chunks a new restore point will reference as in use; return those missing."""
        wanted = [c for c in dict.fromkeys(chunk_ids) if c != ZERO_ID]
        absent: set[bytes] = set()
        for start in range(0, len(wanted), EXISTS_BATCH):
            keys = {chunk_key(c): c for c in wanted[start : start + EXISTS_BATCH]}
            present = self.backend.touch_many(keys)
            self._remember(keys[k] for k in present)
            absent.update(c for k, c in keys.items() if k not in present)
        return absent

    def _fresh(self, chunk_id: bytes, fresh_after: float) -> bool:
        seen = self._known.get(chunk_id)
        return seen is not None and seen > fresh_after

    def _remember(self, chunk_ids: Iterable[bytes]) -> None:
        now = time.monotonic()
        with self._known_lock:
            if len(self._known) >= KNOWN_CACHE_MAX:
                self._known.clear()  # crude but bounded; a miss only costs one exists check
            self._known.update((c, now) for c in chunk_ids)

    def forget_known(self) -> None:
        """Drop the cache of ids known present (after a GC ran in this process, for instance)."""
        with self._known_lock:
            self._known.clear()

    def put_chunk(self, chunk_id: bytes, plaintext: BytesLike) -> int:
        """Compress/encrypt and store; return the stored size. ``chunk_id`` is ``chunk_id(plaintext)``."""
        if len(plaintext) > self.max_chunk_size:
            raise ValueError(f"{len(plaintext)} bytes is more than the largest chunk {self.max_chunk_size}")
        stored = self._codec.encode(chunk_id, plaintext)
        self.backend.put(chunk_key(chunk_id), stored)
        self._remember((chunk_id,))
        return len(stored)

    def get_chunk(self, chunk_id: bytes) -> bytes:
        """Fetch, authenticate, decompress and re-hash; raise ``ChunkMissing`` / ``ChunkDamaged``."""
        try:
            stored = self.backend.get(chunk_key(chunk_id))
        except ObjectMissing:
            raise ChunkMissing(chunk_id) from None
        return self._codec.decode(chunk_id, stored)

    def get_stored_chunk(self, chunk_id: bytes) -> bytes:
        """The chunk as stored (compressed, encrypted), after checking that it decodes to itself.

        For copies to a repository with the same keys: the bytes travel as they are, but damage is
        found here, at the source, rather than copied offsite.
        """
        try:
            stored = self.backend.get(chunk_key(chunk_id))
        except ObjectMissing:
            raise ChunkMissing(chunk_id) from None
        self._codec.decode(chunk_id, stored)
        return stored

    def chunk_ids(self) -> Iterator[bytes]:
        """Every stored chunk id (a full listing: for GC, never for backups)."""
        for key in self.backend.list("chunks/"):
            chunk_id = parse_chunk_key(key)
            if chunk_id is not None:
                yield chunk_id

    def delete_chunk_if_older(self, chunk_id: bytes, cutoff: datetime) -> ObjectStat | None:
        """GC's sweep of one chunk (see ``Backend.delete_if_older``)."""
        with self._known_lock:
            self._known.pop(chunk_id, None)
        return self.backend.delete_if_older(chunk_key(chunk_id), cutoff)

    # -- restore points --------------------------------------------------------------------------

    def begin_restore_point(
        self,
        restore_point_id: str,
        *,
        vm_config: dict[str, Any],
        metadata: dict[str, Any] | None = None,
        created_at: datetime | None = None,
    ) -> RestorePointWriter:
        """Start writing a restore point: add disk indexes, then ``commit()`` writes the manifest."""
        if self.backend.exists(manifest_key(restore_point_id)):
            raise RestorePointExists(restore_point_id)
        return RestorePointWriter(self, restore_point_id, vm_config, metadata or {}, created_at)

    def list_restore_points(self) -> list[str]:
        return ids_under(self.backend.list(MANIFEST_PREFIX), MANIFEST_PREFIX)

    def has_restore_point(self, restore_point_id: str) -> bool:
        """Whether the point's manifest is here (one existence check, nothing read)."""
        return self.backend.exists(manifest_key(restore_point_id))

    def read_restore_point(self, restore_point_id: str) -> RestorePoint:
        point = self._read_manifest(
            manifest_key(restore_point_id), RestorePoint.from_json, RestorePointNotFound(restore_point_id)
        )
        if point.id != restore_point_id:
            raise ObjectDamaged(manifest_key(restore_point_id), f"manifest names restore point {point.id!r}")
        return point

    def delete_restore_point(self, restore_point_id: str) -> None:
        """Remove the manifest (first: the restore point vanishes atomically), then its indexes.

        Chunks stay: other restore points may share them; ``gc`` frees the unreferenced ones.
        """
        missing = RestorePointNotFound(restore_point_id)
        self._delete_published(manifest_key(restore_point_id), index_prefix(restore_point_id), missing)

    def write_manifest(self, point: RestorePoint) -> None:
        """Atomically publish a restore point whose indexes are already written (the commit point)."""
        self._publish(manifest_key(point.id), point.to_json(), RestorePointExists(point.id))

    # -- exports ---------------------------------------------------------------------------------

    def begin_export(
        self, export_id: str, *, metadata: dict[str, Any] | None = None, created_at: datetime | None = None
    ) -> ExportWriter:
        """Start writing an export: add streams (``backup_stream``), then ``commit()`` publishes it.

        ``metadata`` is opaque JSON stored with it (who asked for it, the archive's file name...).
        """
        if self.backend.exists(export_key(export_id)):
            raise ExportExists(export_id)
        return ExportWriter(self, export_id, metadata or {}, created_at)

    def list_exports(self) -> list[Export]:
        """Every committed export (its manifest: creation time, metadata, streams), oldest first.

        An export deleted while listing is left out; a damaged manifest raises ``ObjectDamaged`` (its
        key names the export, which ``delete_export`` can still remove).
        """
        exports: list[Export] = []
        for export_id in ids_under(self.backend.list(EXPORT_PREFIX), EXPORT_PREFIX):
            try:
                exports.append(self.read_export(export_id))
            except ExportNotFound:
                continue
        return sorted(exports, key=lambda e: (e.created_at, e.id))

    def read_export(self, export_id: str) -> Export:
        export = self._read_manifest(export_key(export_id), Export.from_json, ExportNotFound(export_id))
        if export.id != export_id:
            raise ObjectDamaged(export_key(export_id), f"manifest names export {export.id!r}")
        return export

    def delete_export(self, export_id: str) -> None:
        """Remove the export's manifest (it vanishes atomically), then its index segments.

        Its chunks stay until ``gc`` finds nothing else referencing them.
        """
        missing = ExportNotFound(export_id)
        self._delete_published(export_key(export_id), export_index_prefix(export_id), missing)

    def write_export(self, export: Export) -> None:
        """Atomically publish an export whose index segments are already written (the commit point)."""
        self._publish(export_key(export.id), export.to_json(), ExportExists(export.id))

    # -- manifests and index objects -------------------------------------------------------------

    def _read_manifest(self, key: str, parse: Callable[[bytes], _M], missing: ChunkstoreError) -> _M:
        try:
            stored = self.backend.get(key)
        except ObjectMissing:
            raise missing from None
        try:
            return parse(self._meta.open(key, stored))
        except (ValueError, KeyError, TypeError) as exc:
            raise ObjectDamaged(key, f"unreadable manifest: {exc}") from None

    def _publish(self, key: str, raw: bytes, exists: ChunkstoreError) -> None:
        # The backend has no put-if-absent: one writer per id is the caller's rule (ids are unique).
        if self.backend.exists(key):
            raise exists
        self.backend.put(key, self._meta.seal(key, raw))

    def _delete_published(self, key: str, indexes: str, missing: ChunkstoreError) -> None:
        if not self.backend.exists(key):
            raise missing
        self.backend.delete(key)
        for index_key in list(self.backend.list(indexes)):
            self.backend.delete(index_key)

    def _write_meta(self, key: str, raw: bytes) -> tuple[str, int]:
        """Store a (sealed) metadata object; return (hex BLAKE3 of the stored bytes, stored size)."""
        stored = self._meta.seal(key, raw)
        self.backend.put(key, stored)
        return blake3.blake3(stored).hexdigest(), len(stored)

    def _read_meta(self, key: str, expected_hash: str) -> bytes:
        """Fetch a metadata object, check it against the hash its manifest recorded, unseal it."""
        try:
            stored = self.backend.get(key)
        except ObjectMissing:
            raise ObjectDamaged(key, "index object is missing") from None
        if blake3.blake3(stored).hexdigest() != expected_hash:
            raise ObjectDamaged(key, "index does not match the hash in its manifest")
        return self._meta.open(key, stored)

    def write_index(self, index_key: str, index: DiskIndex) -> tuple[str, int]:
        """Store an index object; return (hex BLAKE3 of the stored bytes, stored size)."""
        return self._write_meta(index_key, index.to_bytes())

    def write_stream_segment(self, key: str, segment: StreamSegmentIndex) -> StreamSegment:
        """Store one segment of a stream's chunk index; return its manifest record."""
        digest, _ = self._write_meta(key, segment.to_bytes())
        return StreamSegment(key=key, hash=digest, chunks=len(segment), size=segment.size)

    def read_stream_segment(self, segment: StreamSegment) -> StreamSegmentIndex:
        """Load and check one segment of a stream's chunk index."""
        raw = self._read_meta(segment.key, segment.hash)
        try:
            index = StreamSegmentIndex.from_bytes(raw)
        except IndexFormatError as exc:
            raise ObjectDamaged(segment.key, str(exc)) from None
        if len(index) != segment.chunks or index.size != segment.size:
            raise ObjectDamaged(segment.key, "stream index differs from its manifest")
        return index

    def read_index(self, disk: DiskRecord) -> DiskIndex:
        """Load and check the chunk index of one disk of a restore point."""
        raw = self._read_meta(disk.index_key, disk.index_hash)
        try:
            index = DiskIndex.from_bytes(raw)
        except IndexFormatError as exc:
            raise ObjectDamaged(disk.index_key, str(exc)) from None
        if index.disk_size != disk.size or index.chunk_size != disk.chunk_size:
            raise ObjectDamaged(disk.index_key, "index geometry differs from its manifest")
        return index

    def iter_indexes(self) -> Iterator[tuple[RestorePoint, DiskRecord, DiskIndex]]:
        """Every (restore point, disk, index) in the repository, one index in memory at a time."""
        for restore_point_id in self.list_restore_points():
            point = self.read_restore_point(restore_point_id)
            for disk in point.disks:
                yield point, disk, self.read_index(disk)
