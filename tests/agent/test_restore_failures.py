"""Why a restore over the original VM stopped: a damaged point is for good, a repository that
failed (an object store down) is retried, and neither is confused with the other."""

from __future__ import annotations

from app.agent.runners.restore import overwrite_failed
from app.chunkstore.errors import ChunkDamaged, ChunkMissing
from app.chunkstore.s3 import S3Unavailable


def test_a_damaged_or_incomplete_point_is_permanent_and_says_to_restore_another() -> None:
    for exc in (ChunkDamaged(b"\x01" * 32, "hash mismatch"), ChunkMissing(b"\x02" * 32)):
        failed = overwrite_failed(exc, "rp-1", "web")
        assert not failed.transient
        assert "rp-1 is damaged" in str(failed) and "restore another point" in str(failed)


def test_a_repository_error_is_retried_and_does_not_blame_the_point() -> None:
    down = S3Unavailable("http://s3.local: connection refused after 5 attempts", bucket="backups")
    failed = overwrite_failed(down, "rp-1", "web")
    assert failed.transient
    assert "damaged" not in str(failed) and "retried" in str(failed)
