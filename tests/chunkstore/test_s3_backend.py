"""The S3 backend against a real object store (SeaweedFS): repositories on S3, GC's grace period with S3
modification times, credentials kept out of sight, clear errors, many threads at once.

The generic behaviour (puts, lists, touch, atomicity) is the conformance suite's, which runs on S3 too.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from app.chunkstore import Repository, backup_disk, gc, iter_disk, open_backend
from app.chunkstore.s3 import S3AuthError, S3Backend, S3BucketMissing, S3Credentials, S3Error
from tests.chunkstore.conftest import CHUNK, FAST_KDF, PASSPHRASE, BytesReader, disk_bytes
from tests.support.seaweed import REGION, SeaweedServer


@pytest.fixture
def s3(seaweed: SeaweedServer) -> Iterator[S3Backend]:
    backend = seaweed.backend()
    yield backend
    backend.close()


def _create(backend: S3Backend, encrypted: bool) -> Repository:
    return Repository.create(
        backend, passphrase=PASSPHRASE if encrypted else None, chunk_size=CHUNK, kdf=FAST_KDF
    )


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_repository_on_s3_backs_up_and_restores_byte_exact(seaweed: SeaweedServer, encrypted: bool) -> None:
    bucket = seaweed.new_bucket("repo")
    with_prefix = seaweed.backend(bucket, prefix="site-a/vmr")
    repo = _create(with_prefix, encrypted)
    data = disk_bytes(12 * CHUNK + 777, seed=21)
    result = backup_disk(repo, BytesReader(data), len(data), workers=4)
    assert result.stats.chunks_new > 0
    writer = repo.begin_restore_point("rp-1", vm_config={"name": "vm1"})
    writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
    writer.commit()

    # Another process opens it through a location and credentials handed over separately.
    location = seaweed.location(bucket, "site-a/vmr")
    reopened_backend = open_backend(location, credentials=seaweed.credentials)
    again = Repository.open(reopened_backend, passphrase=PASSPHRASE if encrypted else None)
    point = again.read_restore_point("rp-1")
    index = again.read_index(point.disk("2000"))
    assert b"".join(iter_disk(again, index, workers=3)) == data
    # The dedup check runs against the store: the same disk again stores nothing.
    second = backup_disk(again, BytesReader(data), len(data), workers=4)
    assert second.stats.chunks_new == 0
    assert second.stats.bytes_stored == 0
    # Everything lives under the prefix, nothing beside it.
    names = [o["Key"] for o in seaweed.admin.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert names
    assert all(name.startswith("site-a/vmr/") for name in names)
    with_prefix.close()


def test_gc_grace_period_uses_s3_modification_times(s3: S3Backend) -> None:
    grace = timedelta(seconds=0.5)
    repo = _create(s3, encrypted=True)
    kept = disk_bytes(3 * CHUNK, seed=31, kinds="r")
    orphan = disk_bytes(4 * CHUNK, seed=32, kinds="r")
    writer = repo.begin_restore_point("rp-1", vm_config={})
    index = backup_disk(repo, BytesReader(kept), len(kept)).index
    writer.add_disk(key="2000", label="Hard disk 1", index=index)
    writer.commit()
    backup_disk(repo, BytesReader(orphan), len(orphan))  # chunks nothing references (a failed backup)

    report = gc(repo, grace)
    assert (report.chunks_deleted, report.chunks_kept_young) == (0, 4)  # young: spared
    time.sleep(0.6)
    assert gc(repo, grace, dry_run=True).chunks_deleted == 4  # old now

    # A backup that finds the orphans stored (a fresh process: nothing cached) touches them.
    again = Repository.open(s3, passphrase=PASSPHRASE)
    assert backup_disk(again, BytesReader(orphan), len(orphan)).stats.chunks_new == 0
    report = gc(repo, grace)
    assert (report.chunks_deleted, report.chunks_kept_young) == (0, 4)

    time.sleep(0.6)
    report = gc(repo, grace)
    assert report.chunks_deleted == 4
    assert report.bytes_freed > 0
    assert b"".join(iter_disk(repo, repo.read_index(repo.read_restore_point("rp-1").disk("2000")))) == kept


def test_stat_follows_the_server_clock_not_a_stray_stamp(seaweed: SeaweedServer, s3: S3Backend) -> None:
    # An object stamped by a client whose clock is a day behind is not a day old: the server's
    # Last-Modified wins whenever the two disagree by more than its one-second resolution.
    yesterday = time.time_ns() - 86_400 * 10**9
    seaweed.admin.put_object(
        Bucket=s3.bucket, Key="chunks/aa/x", Body=b"x", Metadata={"vmr-mtime-ns": str(yesterday)}
    )
    modified = s3.stat("chunks/aa/x").modified
    assert abs(modified - datetime.now(UTC)) < timedelta(seconds=5)
    seaweed.admin.put_object(Bucket=s3.bucket, Key="chunks/aa/y", Body=b"y")  # written by another tool
    assert abs(s3.stat("chunks/aa/y").modified - datetime.now(UTC)) < timedelta(seconds=5)


def test_touch_keeps_content_and_moves_last_modified(seaweed: SeaweedServer, s3: S3Backend) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 5)
    s3.put("chunks/ab/big", payload)
    before = seaweed.admin.head_object(Bucket=s3.bucket, Key="chunks/ab/big")["LastModified"]
    time.sleep(1.05)  # Last-Modified has whole seconds
    assert s3.touch_many(["chunks/ab/big"]) == {"chunks/ab/big"}
    after = seaweed.admin.head_object(Bucket=s3.bucket, Key="chunks/ab/big")["LastModified"]
    assert after > before
    assert s3.get("chunks/ab/big") == payload


def test_batches_run_in_parallel_but_bounded(seaweed: SeaweedServer) -> None:
    backend = seaweed.backend(parallelism=8)
    present = [f"chunks/{i:02x}/{i}" for i in range(0, 256, 4)]
    for key in present:
        backend.put(key, b"c")
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def started(**_: object) -> None:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)

    def finished(**_: object) -> None:
        nonlocal in_flight
        with lock:
            in_flight -= 1

    events = backend._client.meta.events
    events.register("before-call.s3.HeadObject", started)
    events.register("after-call.s3.HeadObject", finished)
    wanted = [f"chunks/{i:02x}/{i}" for i in range(256)]
    assert backend.exists_many(wanted) == set(present)
    assert 2 <= peak <= 8
    assert backend.touch_many(wanted) == set(present)
    backend.close()


def test_many_threads_put_and_get_at_once(s3: S3Backend) -> None:
    errors: list[str] = []

    def work(n: int) -> None:
        for i in range(8):
            key = f"chunks/{n:02x}/{i}"
            data = os.urandom(20_000 + n * 100 + i)
            s3.put(key, data)
            if s3.get(key) != data:
                errors.append(key)
            if s3.exists_many([key, f"chunks/{n:02x}/missing"]) != {key}:
                errors.append(f"exists {key}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(s3.list("chunks/"))) == 12 * 8


def test_list_pages_through_everything(s3: S3Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("app.chunkstore.s3.LIST_PAGE_SIZE", 7)
    keys = {f"indexes/rp-{i}/0" for i in range(30)}
    for key in keys:
        s3.put(key, b"i")
    s3.put("indexesx", b"not below the directory")
    calls: list[int] = []
    s3._client.meta.events.register("before-call.s3.ListObjectsV2", lambda **_: calls.append(1))
    assert set(s3.list("indexes/")) == keys
    assert len(calls) >= 5  # 30 keys, 7 a page


def test_credentials_never_show(seaweed: SeaweedServer, caplog: pytest.LogCaptureFixture) -> None:
    real = seaweed.credentials
    token = "session-token-" + real.secret_key[:10]
    wrong = S3Credentials(real.access_key, "not-" + real.secret_key, session_token=token)
    secrets_ = (real.access_key, real.secret_key, wrong.secret_key, token)
    backend = S3Backend(seaweed.new_bucket(), endpoint_url=seaweed.endpoint, region=REGION, credentials=wrong)
    shown = [repr(backend), str(backend), repr(real), str(real), repr(wrong), f"{wrong}"]
    caplog.set_level(logging.DEBUG)  # even botocore's debug log of the signed requests
    with pytest.raises(S3AuthError) as info:
        backend.put("chunks/aa/1", b"x")
    shown += [str(info.value), repr(info.value)]
    shown += traceback.format_exception(info.value)  # the chained botocore error included
    logged = [record.getMessage() for record in caplog.records]
    assert any("Authorization" in line for line in logged)  # the signed request was logged, hidden
    shown += logged
    for text in shown:
        for secret in secrets_:
            assert secret not in text
    backend.close()


def test_wrong_secret_is_a_clear_authentication_error(seaweed: SeaweedServer) -> None:
    bucket = seaweed.new_bucket()
    wrong = S3Credentials(access_key=seaweed.credentials.access_key, secret_key="wrong-secret")
    backend = S3Backend(bucket, prefix="p", endpoint_url=seaweed.endpoint, region=REGION, credentials=wrong)
    with pytest.raises(S3AuthError, match="check the access key") as info:
        backend.put("chunks/aa/1", b"x")
    assert f"s3://{bucket}/p/chunks/aa/1" in str(info.value)
    assert info.value.status == 403
    for call in (
        lambda: backend.get("config"),
        lambda: backend.exists("config"),
        lambda: backend.stat("config"),
        lambda: list(backend.list("chunks/")),
        lambda: backend.touch_many(["a", "b"]),
    ):
        with pytest.raises(S3AuthError, match=bucket):
            call()
    with pytest.raises(S3AuthError):
        Repository.open(backend)
    backend.close()


def test_missing_bucket_is_a_clear_error(seaweed: SeaweedServer) -> None:
    backend = seaweed.backend("no-such-bucket-here")
    for call in (
        lambda: backend.put("config", b"x"),
        lambda: backend.get("config"),
        lambda: backend.exists("config"),  # a HEAD's 404 alone cannot tell bucket from key
        lambda: backend.stat("config"),
        lambda: list(backend.list("")),
        lambda: backend.touch_many(["a", "b"]),
        lambda: backend.delete("config"),
    ):
        with pytest.raises(S3BucketMissing, match="bucket 'no-such-bucket-here' does not exist"):
            call()
    backend.close()


def test_other_failures_are_repository_errors(seaweed: SeaweedServer) -> None:
    unreachable = S3Backend(
        "bucket",
        endpoint_url="http://127.0.0.1:9",  # nothing listens on the discard port
        region=REGION,
        credentials=seaweed.credentials,
        max_attempts=1,
        connect_timeout=1,
    )
    with pytest.raises(S3Error, match=r"s3://bucket/config at http://127\.0\.0\.1:9"):
        unreachable.get("config")
    unreachable.close()


def test_credentials_from_the_environment(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.credentials.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.credentials.secret_key)
    bucket = seaweed.new_bucket()
    backend = open_backend(seaweed.location(bucket))
    backend.put("config", b"c")
    assert backend.get("config") == b"c"


def test_no_credentials_at_all(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(tmp_path, "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(tmp_path, "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(S3AuthError, match=r"no S3 credentials for bucket 'vmr'.*AWS_ACCESS_KEY_ID"):
        open_backend("s3://vmr?endpoint=http://127.0.0.1:9")
