"""``vmrecovery repository verify`` as an operator runs it: a real process over a real repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from app.chunkstore import FsBackend, Repository, open_stream_backup

VMRECOVERY = str(Path(sys.executable).with_name("vmrecovery"))


def run_verify(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "VMR_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [VMRECOVERY, "repository", "verify"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_verify_names_restore_points_and_restore_archives_it_finds_damaged(tmp_path: Path) -> None:
    repo = Repository.create(FsBackend(tmp_path / "repository", durable=False), chunk_size=64 * 1024)
    writer = repo.begin_restore_point("rp-1", vm_config={})
    with open_stream_backup(writer, "postgresql/sales") as stream:
        stream.write(os.urandom(300_000))
        stream.finish()
    writer.commit()
    export = repo.begin_export("restore-1")
    with open_stream_backup(export, "archive.tar") as stream:
        stream.write(os.urandom(200_000))  # chunks of the archive alone
        stream.finish()
    export.commit()

    ok = run_verify(tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "of 1 restore points and 1 restore archives (0 disks, 2 streams)" in ok.stdout
    assert "repository OK" in ok.stdout

    archive_chunk = next(
        iter(
            {
                chunk
                for segment in repo.read_export("restore-1").stream("archive.tar").segments
                for chunk, _ in repo.read_stream_segment(segment)
            }
        )
    )
    path = tmp_path / "repository" / "chunks" / archive_chunk.hex()[:2] / archive_chunk.hex()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))

    damaged = run_verify(tmp_path)
    assert damaged.returncode == 1
    assert "restore archives affected: restore-1" in damaged.stdout
    assert (
        "DAMAGE FOUND; restore points affected: none; restore archives affected: restore-1" in damaged.stdout
    )
