"""Benchmark: file-level restore (app.files) out of a restore point, against a full-disk restore.

    python bench/files.py [--workdir /tmp/vmr-files-bench] [--runs 3] [--workers 4]

Builds once (cached in the work directory, never in the source tree) a 4 GiB disk image with a GPT and
four partitions, each filled to about 80% with files by the real tools, never mounted:

    1  ext4   1.5 GiB  mke2fs -d        /large.bin (1 GiB, random), documents, media, small files
    2  XFS    0.8 GiB  mkfs.xfs -p      media, documents, small files
    3  NTFS   0.8 GiB  mkntfs + ntfscp  media, documents, small files (root directory only)
    4  FAT32  0.8 GiB  mkfs.fat + mcopy media, documents, small files

and backs it up (once) into an encrypted repository with 1 MiB chunks in the work directory. Then:

* per filesystem, from a cold reader: the time to read the restore point's index, discover the disk's
  volumes, open the filesystem and list its root directory, and what that fetched from the repository
  (chunks, their plaintext bytes, and their stored size: compressed and encrypted, what an object store
  would transfer). Goal: < 200 ms and < 8 MiB per filesystem.
* the throughput of downloading /large.bin through ``DiskBrowser``/``FileStream`` (1 MiB reads) against
  ``iter_disk`` of the whole disk, both written to /dev/null, in MB/s of bytes produced; median of
  ``--runs``. Goal: the file at >= 70% of the full-disk restore's rate. The disk is about 80% data: its
  zero chunks come out of ``iter_disk`` for free, which flatters the full restore a little, so the rate
  over its stored chunks is shown too.

"Cold" means new ``Repository`` and reader objects and the repository's files evicted from the page
cache (``posix_fadvise(DONTNEED)``, which touches nothing but those files) before every measurement;
"warm" runs repeat the measurement with the repository in the page cache. Results are printed as
Markdown and saved as JSON in the work directory. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import blake3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.chunkstore import DiskImageReader, FileReader, FsBackend, Repository, backup_disk, iter_disk  # noqa: E402
from app.chunkstore.ids import ZERO_ID, chunk_key  # noqa: E402
from app.files import DiskBrowser  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
SEED = 20251201
PASSPHRASE = "bench passphrase"  # noqa: S105 - a throwaway benchmark repository
RESTORE_POINT = "bench-files"
LARGE = "/large.bin"

# (name, filesystem, size, files to put on it: (path, bytes, kind))
GPT_LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
GPT_BASIC_DATA = "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7"


def layout() -> list[dict[str, Any]]:
    def fill(prefix: str, media: int, documents: int) -> list[tuple[str, int, str]]:
        files = [(f"{prefix}media-{i:02}.bin", 12 * MiB, "random") for i in range(media)]
        files += [(f"{prefix}document-{i:02}.txt", 6 * MiB, "text") for i in range(documents)]
        files += [(f"{prefix}small-{i:03}.txt", 4096 + 97 * i, "text") for i in range(40)]
        return files

    return [
        {
            "fs": "ext4",
            "size": 1536 * MiB,
            "type": GPT_LINUX,
            "files": [(LARGE, GiB, "random"), *fill("/data/", 12, 12)],
        },
        {"fs": "xfs", "size": 820 * MiB, "type": GPT_LINUX, "files": fill("/data/", 40, 25)},
        {"fs": "ntfs", "size": 820 * MiB, "type": GPT_BASIC_DATA, "files": fill("/", 40, 25)},
        {"fs": "fat32", "size": 820 * MiB, "type": GPT_BASIC_DATA, "files": fill("/data/", 40, 25)},
    ]


# -- building the image ----------------------------------------------------------------------------------


def run(*args: str | Path, env: dict[str, str] | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, env={**os.environ, **(env or {})})


def content(path: str, size: int, kind: str) -> bytes:
    """Reproducible file content: random (incompressible) or text-like (compressible, never repeated)."""
    seed = blake3.blake3(f"{SEED}:{path}".encode()).digest()
    stream = blake3.blake3(seed).digest(length=size)
    if kind == "random":
        return stream
    letters = bytes(range(97, 123)) + b"  \n"
    return stream.translate(bytes(letters[b % len(letters)] for b in range(256)))


def write_sources(files: list[tuple[str, int, str]], root: Path) -> dict[str, str]:
    shutil.rmtree(root, ignore_errors=True)
    digests = {}
    for path, size, kind in files:
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content(path, size, kind)
        target.write_bytes(data)
        digests[path] = blake3.blake3(data).hexdigest()
    return digests


def make_filesystem(spec: dict[str, Any], src: Path, image: Path) -> None:
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(spec["size"])
    kind = spec["fs"]
    if kind == "ext4":
        run("mke2fs", "-q", "-F", "-t", "ext4", "-L", "bench-ext4", "-d", src, image)
    elif kind == "xfs":
        lines = ["/dev/null", "0 0", "d--755 0 0"]
        for directory in sorted({p.parent for p in src.rglob("*") if p.is_file()}):
            if directory != src:
                lines.append(f"{directory.name} d--755 0 0")
            lines += [f"{p.name} ---644 0 0 {p}" for p in sorted(directory.iterdir()) if p.is_file()]
            if directory != src:
                lines.append("$")
        lines.append("$")
        proto = image.with_suffix(".proto")
        proto.write_text("\n".join(lines) + "\n")
        run("mkfs.xfs", "-q", "-f", "-L", "bench-xfs", "-p", proto, image)
    elif kind == "ntfs":
        run("mkntfs", "-q", "-F", "-Q", "-L", "bench-ntfs", image)
        for p in sorted(src.iterdir()):
            run("ntfscp", image, p, p.name)
    else:
        run("mkfs.fat", "-F", "32", "-n", "BENCHFAT", image)
        env = {"LC_ALL": "C.UTF-8", "TZ": "UTC", "MTOOLS_SKIP_CHECK": "1"}
        run("mcopy", "-s", "-m", "-i", image, *sorted(src.iterdir()), "::/", env=env)


def build_disk(workdir: Path) -> dict[str, Any]:
    meta_path = workdir / "disk.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("seed") == SEED:
            return meta
    disk = workdir / "disk.img"
    specs = layout()
    print(f"building the disk image in {workdir} (once) ...", flush=True)
    offset = MiB
    script = ["label: gpt", "unit: sectors", ""]
    parts = []
    for number, spec in enumerate(specs, 1):
        script.append(f"start={offset // 512}, size={spec['size'] // 512}, type={spec['type']}")
        parts.append({"number": number, "fs": spec["fs"], "offset": offset, "size": spec["size"]})
        offset += spec["size"]
    size = offset + MiB
    disk.unlink(missing_ok=True)
    with open(disk, "wb") as f:
        f.truncate(size)
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(disk)],
        input="\n".join(script) + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    digests: dict[str, str] = {}
    for spec, part in zip(specs, parts, strict=True):
        print(f"  {spec['fs']} ...", flush=True)
        src = workdir / f"src-{spec['fs']}"
        image = workdir / f"{spec['fs']}.img"
        found = write_sources(spec["files"], src)
        if spec["fs"] == "ext4":
            digests = found
        make_filesystem(spec, src, image)
        seek = f"seek={part['offset']}"
        run(
            "dd",
            f"if={image}",
            f"of={disk}",
            "bs=4M",
            seek,
            "oflag=seek_bytes",
            "conv=notrunc,sparse",
            "status=none",
        )
        image.unlink()
        shutil.rmtree(src)
    meta = {"seed": SEED, "size": size, "partitions": parts, "large": digests[LARGE]}
    meta_path.write_text(json.dumps(meta))
    return meta


def back_up(workdir: Path, meta: dict[str, Any], workers: int) -> dict[str, Any]:
    root = workdir / "repo"
    done = workdir / "backup.json"
    if done.exists() and (root / "config").exists():
        result: dict[str, Any] = json.loads(done.read_text())
        if result.get("seed") == SEED:
            return result
    shutil.rmtree(root, ignore_errors=True)
    print("backing up the disk image (once) ...", flush=True)
    repo = Repository.create(FsBackend(root), passphrase=PASSPHRASE)
    with FileReader(workdir / "disk.img") as reader:
        started = time.monotonic()
        backup = backup_disk(repo, reader, reader.size, workers=workers)
        seconds = time.monotonic() - started
    writer = repo.begin_restore_point(RESTORE_POINT, vm_config={"name": "bench"})
    writer.add_disk(key="2000", label="Hard disk 1", index=backup.index)
    writer.commit()
    stats = backup.stats
    result = {
        "seed": SEED,
        "seconds": seconds,
        "chunks": stats.chunks_total,
        "chunks_zero": stats.chunks_zero,
        "bytes_stored": stats.bytes_stored,
    }
    done.write_text(json.dumps(result))
    return result


# -- measuring --------------------------------------------------------------------------------------------


def evict(root: Path) -> None:
    """Drop the repository's files (and nothing else) from the page cache."""
    for directory, _, names in os.walk(root):
        for name in names:
            fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


class CountingRepository:
    """A repository whose chunk fetches are recorded, to sum what they cost in storage."""

    def __init__(self, repo: Repository) -> None:
        self._repo = repo
        self.fetched: list[bytes] = []

    def get_chunk(self, chunk_id: bytes) -> bytes:
        self.fetched.append(chunk_id)
        return self._repo.get_chunk(chunk_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._repo, name)

    def stored_bytes(self) -> int:
        return sum(self._repo.backend.stat(chunk_key(chunk_id)).size for chunk_id in self.fetched)


def open_repo(workdir: Path, *, cold: bool) -> Repository:
    if cold:
        evict(workdir / "repo")
    return Repository.open(FsBackend(workdir / "repo"), passphrase=PASSPHRASE)


def measure_listing(workdir: Path, volume_id: str, *, cold: bool) -> dict[str, Any]:
    repo = CountingRepository(
        open_repo(workdir, cold=cold)
    )  # the passphrase's KDF is not browsing: not timed
    started = time.perf_counter()
    point = repo.read_restore_point(RESTORE_POINT)
    index = repo.read_index(point.disks[0])
    reader = DiskImageReader(repo, index)  # type: ignore[arg-type]
    browser = DiskBrowser(reader)
    browser.volumes()
    discovered = time.perf_counter()
    discovery_chunks = reader.fetches
    fs = browser.filesystem(volume_id)
    page = fs.list("/")
    finished = time.perf_counter()
    return {
        "seconds": finished - started,
        "discovery_seconds": discovered - started,
        "entries": page.total,
        "chunks": reader.fetches,
        "discovery_chunks": discovery_chunks,
        "plaintext_bytes": reader.fetches * index.chunk_size,
        "stored_bytes": repo.stored_bytes(),
    }


def full_restore(workdir: Path, *, cold: bool, workers: int) -> dict[str, Any]:
    repo = open_repo(workdir, cold=cold)
    index = repo.read_index(repo.read_restore_point(RESTORE_POINT).disks[0])
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        started = time.perf_counter()
        produced = 0
        for piece in iter_disk(repo, index, workers=workers):
            os.write(devnull, piece)
            produced += len(piece)
        seconds = time.perf_counter() - started
    finally:
        os.close(devnull)
    stored = sum(index.chunk_length(n) for n in range(len(index)) if index.chunk_id(n) != ZERO_ID)
    return {"seconds": seconds, "bytes": produced, "stored_chunk_bytes": stored}


def file_download(workdir: Path, *, cold: bool, expected: str | None = None) -> dict[str, Any]:
    repo = open_repo(workdir, cold=cold)
    devnull = os.open(os.devnull, os.O_WRONLY)
    digest = blake3.blake3() if expected else None
    try:
        started = time.perf_counter()
        index = repo.read_index(repo.read_restore_point(RESTORE_POINT).disks[0])
        fs = DiskBrowser(DiskImageReader(repo, index)).filesystem("1")
        produced = 0
        with fs.open(LARGE) as f:
            while data := f.read(MiB):
                os.write(devnull, data)
                produced += len(data)
                if digest is not None:
                    digest.update(data)
        seconds = time.perf_counter() - started
    finally:
        os.close(devnull)
    if digest is not None and digest.hexdigest() != expected:
        raise SystemExit(f"{LARGE} read back differs from what was written")
    return {"seconds": seconds, "bytes": produced}


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda run: run["seconds"])[len(runs) // 2]


def mbps(result: dict[str, Any], key: str = "bytes") -> float:
    return float(result[key]) / float(result["seconds"]) / 1e6


# -- report -----------------------------------------------------------------------------------------------


def report(meta: dict[str, Any], backup: dict[str, Any], results: dict[str, Any]) -> str:
    size = f"{meta['size'] / GiB:.2f} GiB"
    out = [
        "### File-level restore (app.files)",
        "",
        f"Disk: {size}, GPT, ext4 1.5 GiB + XFS, NTFS, FAT32 0.8 GiB each, about 80% files; "
        f"{backup['chunks']} chunks of 1 MiB ({backup['chunks_zero']} zero); encrypted repository "
        f"of {backup['bytes_stored'] / GiB:.2f} GiB; {os.cpu_count()} cores.",
        "",
        "Root directory listing from a cold reader (new repository and reader objects, the repository's "
        "files evicted from the page cache): reading the restore point's index, discovering the volumes "
        "(all four filesystems probed: the same for every row), opening the filesystem and listing its "
        "root. Fetched: chunks (during discovery + for opening and listing); plaintext = chunks x 1 MiB; "
        "stored = their compressed, encrypted size. Totals include the discovery of the whole disk.",
        "",
        "| filesystem | entries | ms cold | of which discovery | ms warm | chunks | plaintext MiB "
        "| stored MiB | < 200 ms, < 8 MiB |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | --- |",
    ]
    for row in results["listing"]:
        cold, warm = row["cold"], row["warm"]
        ok = cold["seconds"] < 0.2 and cold["plaintext_bytes"] <= 8 * MiB
        out.append(
            f"| {row['fs']} | {cold['entries']} | {cold['seconds'] * 1000:.0f} "
            f"| {cold['discovery_seconds'] * 1000:.0f} | {warm['seconds'] * 1000:.0f} "
            f"| {cold['discovery_chunks']} + {cold['chunks'] - cold['discovery_chunks']} "
            f"| {cold['plaintext_bytes'] / MiB:.0f} | {cold['stored_bytes'] / MiB:.1f} "
            f"| {'met' if ok else 'missed'} |"
        )
    full, large = results["full"], results["file"]
    out += [
        "",
        f"Throughput in MB/s of bytes produced, median of {results['runs']} runs (new objects each run; cold "
        f"runs evict the repository from the page cache first); {results['workers']} fetch workers each.",
        "",
        "| | cold | warm |",
        "| --- | ---: | ---: |",
        f"| full-disk restore (`iter_disk`, {size} to /dev/null) "
        f"| {full['cold_mbps']:.0f} | {full['warm_mbps']:.0f} |",
        "| the same, counting its stored (non-zero) chunks only "
        f"| {full['cold_stored_mbps']:.0f} | {full['warm_stored_mbps']:.0f} |",
        f"| {LARGE} (1 GiB) through `DiskBrowser`/`FileStream`, 1 MiB reads "
        f"| {large['cold_mbps']:.0f} | {large['warm_mbps']:.0f} |",
        f"| file / full disk (goal >= 70%) "
        f"| {large['cold_mbps'] / full['cold_mbps']:.0%} | {large['warm_mbps'] / full['warm_mbps']:.0%} |",
        "| file / full disk, stored chunks only "
        f"| {large['cold_mbps'] / full['cold_stored_mbps']:.0%} "
        f"| {large['warm_mbps'] / full['warm_stored_mbps']:.0%} |",
    ]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", default="/tmp/vmr-files-bench")  # noqa: S108 - scratch space outside the tree
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--workers", type=int, default=4, help="fetch workers of iter_disk (the read-ahead uses 4)"
    )
    a = p.parse_args()
    workdir = Path(a.workdir).resolve()
    if ROOT in workdir.parents or workdir == ROOT:
        raise SystemExit("the work directory must be outside the source tree")
    workdir.mkdir(parents=True, exist_ok=True)
    meta = build_disk(workdir)
    backup = back_up(workdir, meta, a.workers)
    print("checking the download against the source ...", flush=True)
    file_download(workdir, cold=False, expected=meta["large"])

    results: dict[str, Any] = {"runs": a.runs, "workers": a.workers, "listing": []}
    for part in meta["partitions"]:
        print(f"listing {part['fs']} ...", flush=True)
        cold_runs = [measure_listing(workdir, str(part["number"]), cold=True) for _ in range(a.runs)]
        warm_runs = [measure_listing(workdir, str(part["number"]), cold=False) for _ in range(a.runs)]
        results["listing"].append(
            {"fs": part["fs"], "cold": median_run(cold_runs), "warm": median_run(warm_runs)}
        )

    full: dict[str, Any] = {}
    large: dict[str, Any] = {}
    for temperature in ("cold", "warm"):
        cold = temperature == "cold"
        print(f"full-disk restore and file download, {temperature} ...", flush=True)
        disks, files = [], []
        for _ in range(a.runs):  # interleaved, so that a busy moment of the machine hits both
            disks.append(full_restore(workdir, cold=cold, workers=a.workers))
            files.append(file_download(workdir, cold=cold))
        full[f"{temperature}_mbps"] = statistics.median(mbps(r) for r in disks)
        full[f"{temperature}_stored_mbps"] = statistics.median(mbps(r, "stored_chunk_bytes") for r in disks)
        large[f"{temperature}_mbps"] = statistics.median(mbps(r) for r in files)
        full[f"{temperature}_runs"] = disks
        large[f"{temperature}_runs"] = files
    results["full"], results["file"] = full, large
    (workdir / "results.json").write_text(json.dumps({"meta": meta, "backup": backup, **results}, indent=2))
    print()
    print(report(meta, backup, results))


if __name__ == "__main__":
    main()
