"""The dedup check's cache of chunks known present must not depend on how long the machine has run.

``time.monotonic()`` counts from boot on Linux, so within the cache's TTL after boot an unset entry
compared against ``now - TTL`` looked fresh: every chunk was taken as present and none was stored
(found on a freshly booted CI machine).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.chunkstore import repository as repository_module
from tests.chunkstore.conftest import new_repo


@pytest.mark.parametrize("uptime_s", [5.0, 1e6])
def test_unseen_chunks_are_missing_whatever_the_uptime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, uptime_s: float
) -> None:
    monkeypatch.setattr(repository_module.time, "monotonic", lambda: uptime_s)
    repo = new_repo(tmp_path / "repo")
    data = b"x" * 4096
    chunk_id = repo.chunk_id(data)

    assert repo.missing([chunk_id]) == {chunk_id}
    repo.put_chunk(chunk_id, data)
    assert repo.missing([chunk_id]) == set()
    assert repo.touch_chunks([chunk_id]) == set()
