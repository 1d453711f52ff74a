"""The backup repository, as a standalone library (stdlib + blake3 + zstandard + cryptography).

Fixed-size, offset-aligned, content-addressed chunks (BLAKE3, keyed when encrypted), zstd-compressed,
optionally AES-256-GCM encrypted, on a narrow ``Backend``; restore points are manifests plus binary
chunk indexes stored in the repository itself. Byte streams (database dumps, archives of files) get
content-defined chunks instead, in restore points or in exports (restore outputs kept for download).
Synchronous and thread-safe: proxies run it in threads.

    backend = open_backend("/srv/backups/repo")
    repo = Repository.create(backend, passphrase="...")        # or Repository.open(...)
    result = backup_disk(repo, FileReader("disk.img"), size, workers=4)
    writer = repo.begin_restore_point("rp-1", vm_config={...})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index, change_id="52 ...")
    backup_stream(repo, writer, "postgresql/sales", dump.stdout)  # a byte stream, content-defined chunks
    writer.commit()                                             # the manifest: written last, atomically
    for piece in iter_disk(repo, repo.read_index(repo.read_restore_point("rp-1").disks[0])): ...
    for piece in iter_stream(repo, "rp-1", "postgresql/sales"): ...   # verified, hash checked at the end

    export = repo.begin_export("exp-1", metadata={...})          # a restore output kept for download
    backup_stream(repo, export, "files.tar", tar_pipe)
    export.commit()
    StreamReader(repo, repo.read_export("exp-1"), "files.tar")  # ...; repo.delete_export("exp-1")
"""

from app.chunkstore.backend import Backend, ObjectStat
from app.chunkstore.backends import open_backend
from app.chunkstore.backup import BackupStats, DiskBackupResult, ProgressCallback, backup_disk
from app.chunkstore.cdc import CdcParams, ContentChunker
from app.chunkstore.errors import (
    BackupCancelled,
    ChunkDamaged,
    ChunkError,
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
    StreamDamaged,
    StreamNotFound,
    WrongPassphrase,
)
from app.chunkstore.fs import FsBackend
from app.chunkstore.gc import GcReport, gc
from app.chunkstore.ids import ZERO_ID
from app.chunkstore.index import DiskIndex
from app.chunkstore.keys import ScryptParams
from app.chunkstore.manifest import DiskRecord, Export, RestorePoint, StreamRecord
from app.chunkstore.reader import DiskImageReader
from app.chunkstore.repository import DEFAULT_CHUNK_SIZE, Repository
from app.chunkstore.restore import iter_disk
from app.chunkstore.sources import DiskReader, FileReader
from app.chunkstore.streamread import StreamReader, iter_stream
from app.chunkstore.streams import StreamBackup, StreamBackupResult, backup_stream, open_stream_backup
from app.chunkstore.tuning import tune_malloc
from app.chunkstore.verify import AffectedDisk, AffectedStream, ChunkProblem, VerifyReport, verify
from app.chunkstore.writers import ExportWriter, RestorePointWriter, StreamSetWriter

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ZERO_ID",
    "AffectedDisk",
    "AffectedStream",
    "Backend",
    "BackupCancelled",
    "BackupStats",
    "CdcParams",
    "ChunkDamaged",
    "ChunkError",
    "ChunkMissing",
    "ChunkProblem",
    "ChunkstoreError",
    "ContentChunker",
    "DiskBackupResult",
    "DiskImageReader",
    "DiskIndex",
    "DiskReader",
    "DiskRecord",
    "Export",
    "ExportExists",
    "ExportNotFound",
    "ExportWriter",
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
    "StreamBackup",
    "StreamBackupResult",
    "StreamDamaged",
    "StreamNotFound",
    "StreamReader",
    "StreamRecord",
    "StreamSetWriter",
    "VerifyReport",
    "WrongPassphrase",
    "backup_disk",
    "backup_stream",
    "gc",
    "iter_disk",
    "iter_stream",
    "open_backend",
    "open_stream_backup",
    "tune_malloc",
    "verify",
]
