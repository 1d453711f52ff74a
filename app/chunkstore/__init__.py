"""The backup repository, as a standalone library (stdlib + blake3 + zstandard + cryptography).

Fixed-size, offset-aligned, content-addressed chunks (BLAKE3, keyed when encrypted), zstd-compressed,
optionally AES-256-GCM encrypted, on a narrow ``Backend``; restore points are manifests plus binary
chunk indexes stored in the repository itself. Synchronous and thread-safe: proxies run it in threads.

    backend = open_backend("/srv/backups/repo")
    repo = Repository.create(backend, passphrase="...")        # or Repository.open(...)
    result = backup_disk(repo, FileReader("disk.img"), size, workers=4)
    writer = repo.begin_restore_point("rp-1", vm_config={...})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index, change_id="52 ...")
    writer.commit()                                             # the manifest: written last, atomically
    for piece in iter_disk(repo, repo.read_index(repo.read_restore_point("rp-1").disks[0])): ...
"""

from app.chunkstore.backend import Backend, ObjectStat
from app.chunkstore.backends import open_backend
from app.chunkstore.backup import BackupStats, DiskBackupResult, ProgressCallback, backup_disk
from app.chunkstore.errors import (
    BackupCancelled,
    ChunkDamaged,
    ChunkError,
    ChunkMissing,
    ChunkstoreError,
    ObjectDamaged,
    ObjectMissing,
    RepositoryError,
    RepositoryExists,
    RepositoryNotFound,
    RestorePointExists,
    RestorePointNotFound,
    WrongPassphrase,
)
from app.chunkstore.fs import FsBackend
from app.chunkstore.gc import GcReport, gc
from app.chunkstore.ids import ZERO_ID
from app.chunkstore.index import DiskIndex
from app.chunkstore.keys import ScryptParams
from app.chunkstore.manifest import DiskRecord, RestorePoint
from app.chunkstore.reader import DiskImageReader
from app.chunkstore.repository import DEFAULT_CHUNK_SIZE, Repository, RestorePointWriter
from app.chunkstore.restore import iter_disk
from app.chunkstore.sources import DiskReader, FileReader
from app.chunkstore.tuning import tune_malloc
from app.chunkstore.verify import AffectedDisk, ChunkProblem, VerifyReport, verify

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ZERO_ID",
    "AffectedDisk",
    "Backend",
    "BackupCancelled",
    "BackupStats",
    "ChunkDamaged",
    "ChunkError",
    "ChunkMissing",
    "ChunkProblem",
    "ChunkstoreError",
    "DiskBackupResult",
    "DiskImageReader",
    "DiskIndex",
    "DiskReader",
    "DiskRecord",
    "FileReader",
    "FsBackend",
    "GcReport",
    "ObjectDamaged",
    "ObjectMissing",
    "ObjectStat",
    "ProgressCallback",
    "Repository",
    "RepositoryError",
    "RepositoryExists",
    "RepositoryNotFound",
    "RestorePoint",
    "RestorePointExists",
    "RestorePointNotFound",
    "RestorePointWriter",
    "ScryptParams",
    "VerifyReport",
    "WrongPassphrase",
    "backup_disk",
    "gc",
    "iter_disk",
    "open_backend",
    "tune_malloc",
    "verify",
]
