"""Benchmark: app.chunkstore against restic on the same synthetic VM disk images.

    python bench/backup.py [--size 4G] [--chunk-sizes 1M,2M,4M] [--workers 3] [--workdir /tmp/vmr-bench]

Generates (once, cached in the work directory, never in the source tree) a disk image of ``--size``
made of 1-64 MiB runs: ~40% zeros, ~30% random, ~30% compressible text-like data; and a "next day"
copy with 2% of the disk rewritten in clustered 64 KiB-4 MiB extents plus 0.1% scattered 4 KiB blocks,
whose true changed extents are saved (what CBT would report). Then, on the same files, it measures:

* the raw read rate of the source (sequential read; parallel preads),
* our full backup, our second backup with the CBT path and with the whole-disk fallback (on a hard-linked
  copy of the repository so both start from the same state), our restore (iter_disk to a file,
  SHA-256 checked against the source),
* ``restic backup`` of the first image, then of the second one under the same path, and
  ``restic restore latest``.

Every measured operation runs in its own child process; wall time and peak RSS come from ``wait4``.
Each chunk size in ``--chunk-sizes`` gets its own repository (the first one is the headline). Results
are printed as Markdown tables and saved as JSON in the work directory. Timings are never asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import blake3

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
GiB = 1 << 30
PASSPHRASE = "bench passphrase"  # noqa: S105 - throwaway benchmark repositories
SEED = 20251125


# -- disk images ---------------------------------------------------------------------------------


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MiB, "G": GiB, "T": 1 << 40}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


class _Noise:
    """Reproducible pseudo-random bytes at GB/s (BLAKE3 in XOF mode)."""

    def __init__(self, seed: int) -> None:
        self._hasher = blake3.blake3(seed.to_bytes(8, "little"))
        self._pos = 0

    def take(self, n: int) -> bytes:
        data = self._hasher.digest(length=n, seek=self._pos)
        self._pos += n
        return data


class _Text:
    """Compressible, text-like data that does not deduplicate: 64 KiB slices of a word pool taken at
    random offsets, each stamped with a unique counter (so no two chunks, fixed or content-defined,
    are equal)."""

    def __init__(self, rng: random.Random) -> None:
        letters = "abcdefghijklmnopqrstuvwxyz"
        words = ["".join(rng.choices(letters, k=rng.randint(2, 10))) for _ in range(20000)]
        lines = []
        size = 0
        while size < 8 * MiB:
            line = " ".join(rng.choices(words, k=rng.randint(4, 16))) + "\n"
            lines.append(line)
            size += len(line)
        self._pool = "".join(lines).encode()
        self._rng = rng
        self._counter = 0

    def take(self, n: int) -> bytes:
        parts = []
        left = n
        while left > 0:
            seg = min(left, 64 * 1024)
            self._counter += 1
            stamp = b"%015x\n" % self._counter
            start = self._rng.randrange(0, len(self._pool) - seg)
            piece = stamp + self._pool[start : start + seg - len(stamp)]
            parts.append(piece[:seg])
            left -= seg
        return b"".join(parts)


def generate_images(workdir: Path, size: int) -> dict[str, Any]:
    meta_path = workdir / "images.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("size") == size and meta.get("seed") == SEED:
            return meta
    print(f"generating {size / GiB:.2f} GiB images in {workdir} ...", flush=True)
    rng = random.Random(SEED)
    noise = _Noise(SEED)
    text = _Text(rng)
    day1 = workdir / "day1.img"
    composition = {"zero": 0, "random": 0, "text": 0}
    with open(day1, "wb") as f:
        written = 0
        while written < size:
            run = min(size - written, rng.randint(1, 64) * MiB)
            kind = rng.choices(["zero", "random", "text"], weights=[40, 30, 30])[0]
            composition[kind] += run
            left = run
            while left:
                n = min(left, 8 * MiB)
                f.write(bytes(n) if kind == "zero" else noise.take(n) if kind == "random" else text.take(n))
                left -= n
            written += run
        f.flush()
        os.fsync(f.fileno())

    day2 = workdir / "day2.img"
    shutil.copyfile(day1, day2)
    extents: list[tuple[int, int]] = []
    block = 4096
    with open(day2, "r+b") as f:
        # 2% in clustered extents of 64 KiB - 4 MiB around a few hot spots.
        target = size // 50
        centers = [rng.randrange(0, size) for _ in range(max(1, size // (256 * MiB)))]
        changed = 0
        while changed < target:
            length = min(rng.randint(16, 1024) * block, target - changed + block)
            center = rng.choice(centers)
            offset = max(0, min(size - length, center + rng.randint(-32 * MiB, 32 * MiB)))
            offset -= offset % block
            f.seek(offset)
            f.write(noise.take(length) if rng.random() < 0.5 else text.take(length))
            extents.append((offset, length))
            changed += length
        # 0.1% in scattered 4 KiB blocks anywhere on the disk.
        for _ in range(size // 1000 // block):
            offset = rng.randrange(0, size // block) * block
            f.seek(offset)
            f.write(noise.take(block))
            extents.append((offset, block))
        f.flush()
        os.fsync(f.fileno())
    extents.sort()
    meta = {
        "size": size,
        "seed": SEED,
        "composition": composition,
        "changed_extents": extents,
        "changed_bytes": sum(length for _, length in extents),
        "sha256_day1": sha256_file(day1),
        "sha256_day2": sha256_file(day2),
    }
    meta_path.write_text(json.dumps(meta))
    return meta


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def du(path: Path) -> int:
    """Bytes allocated on disk (du -sb counts apparent size; we want both the same way for everyone)."""
    out = subprocess.run(["du", "-sb", str(path)], check=True, capture_output=True, text=True).stdout
    return int(out.split()[0])


# -- measuring child processes -------------------------------------------------------------------


def run_measured(
    cmd: list[str], env: dict[str, str] | None = None, stdout_path: str | None = None
) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds, peak RSS (MiB, from wait4), CPU seconds and stdout."""
    sink = open(stdout_path, "wb") if stdout_path else None  # noqa: SIM115 - closed below
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=sink or subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out_chunks: list[bytes] = []
    err_chunks: list[bytes] = []

    def pump(stream: Any, sink: list[bytes]) -> None:
        for line in stream:
            sink.append(line)

    threads = [threading.Thread(target=pump, args=(proc.stderr, err_chunks))]
    if sink is None:
        threads.append(threading.Thread(target=pump, args=(proc.stdout, out_chunks)))
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    for t in threads:
        t.join()
    if sink is not None:
        sink.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(b"".join(err_chunks).decode(errors="replace"))
        raise RuntimeError(f"{cmd[:4]} failed with {proc.returncode}")
    return {
        "wall": wall,
        "rss_mib": usage.ru_maxrss / 1024,
        "cpu": usage.ru_utime + usage.ru_stime,
        "stdout": b"".join(out_chunks).decode(),
    }


def settle() -> None:
    """Flush dirty pages (and the discards of deleted repositories) so one run does not pay for the last."""
    os.sync()
    time.sleep(3)
    os.sync()


def child(args: list[str]) -> dict[str, Any]:
    settle()
    result = run_measured([sys.executable, str(Path(__file__).resolve()), "_child", *args])
    result.update(json.loads(result.pop("stdout").strip().splitlines()[-1]))
    return result


# -- child side: our pipeline --------------------------------------------------------------------


def _child_main(argv: list[str]) -> None:
    sys.path.insert(0, str(ROOT))
    from app.chunkstore import FileReader, FsBackend, Repository, backup_disk, iter_disk

    p = argparse.ArgumentParser()
    p.add_argument("op", choices=["init", "backup", "restore"])
    p.add_argument("--repo", required=True)
    p.add_argument("--image")
    p.add_argument("--rp")
    p.add_argument("--prev")
    p.add_argument("--extents")
    p.add_argument("--out")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--chunk-size", type=int, default=0)
    p.add_argument("--level", type=int, default=1)
    p.add_argument("--plain", action="store_true")
    p.add_argument("--no-fsync", action="store_true", help="diagnostic only: what the disk costs")
    a = p.parse_args(argv)
    passphrase = None if a.plain else PASSPHRASE
    if a.op == "init":
        Repository.create(
            FsBackend(a.repo), passphrase=passphrase, chunk_size=a.chunk_size, compression_level=a.level
        )
        print(json.dumps({}))
        return
    repo = Repository.open(FsBackend(a.repo, durable=not a.no_fsync), passphrase=passphrase)
    if a.op == "backup":
        previous = None
        if a.prev:
            previous = repo.read_index(repo.read_restore_point(a.prev).disks[0])
        extents = None
        if a.extents:
            extents = [tuple(e) for e in json.loads(Path(a.extents).read_text())]
        with FileReader(a.image) as reader:
            t = time.monotonic()
            result = backup_disk(
                repo,
                reader,
                reader.size,
                changed_extents=extents,
                previous_index=previous,
                workers=a.workers,
            )
            elapsed = time.monotonic() - t
        writer = repo.begin_restore_point(a.rp, vm_config={"bench": True})
        writer.add_disk(key="2000", label="Hard disk 1", index=result.index)
        writer.commit()
        s = result.stats
        print(
            json.dumps(
                {
                    "pipeline": elapsed,
                    "chunks_total": s.chunks_total,
                    "chunks_read": s.chunks_read,
                    "chunks_new": s.chunks_new,
                    "chunks_zero": s.chunks_zero,
                    "chunks_reused": s.chunks_reused,
                    "bytes_read": s.bytes_read,
                    "bytes_new": s.bytes_new,
                    "bytes_stored": s.bytes_stored,
                }
            )
        )
    else:
        index = repo.read_index(repo.read_restore_point(a.rp).disks[0])
        t = time.monotonic()
        fd = os.open(a.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for piece in iter_disk(repo, index, workers=a.workers):
                view = memoryview(piece)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        print(json.dumps({"pipeline": time.monotonic() - t}))


# -- raw read rate -------------------------------------------------------------------------------


def raw_read(path: Path, workers: int, block: int = 4 * MiB) -> dict[str, float]:
    size = path.stat().st_size
    t = time.monotonic()
    with open(path, "rb", buffering=0) as f:
        while f.read(block):
            pass
    sequential = size / (time.monotonic() - t)
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(lambda off: len(os.pread(fd, block, off)), range(0, size, block)):
                pass
        parallel = size / (time.monotonic() - t)
    finally:
        os.close(fd)
    return {"sequential": sequential, "parallel": parallel}


# -- scenarios -----------------------------------------------------------------------------------


def ours(workdir: Path, meta: dict[str, Any], chunk_size: int, a: argparse.Namespace) -> dict[str, Any]:
    tag = f"{chunk_size // MiB}M" if chunk_size >= MiB else f"{chunk_size // 1024}K"
    repo = workdir / f"ours-{tag}"
    repo_fallback = workdir / f"ours-{tag}-fallback"
    for d in (repo, repo_fallback):
        shutil.rmtree(d, ignore_errors=True)
    common = ["--workers", str(a.workers)] + (["--plain"] if a.plain else [])
    common += ["--no-fsync"] if a.no_fsync else []
    day1, day2 = str(workdir / "day1.img"), str(workdir / "day2.img")
    extents_file = workdir / "extents.json"
    extents_file.write_text(json.dumps(meta["changed_extents"]))
    r: dict[str, Any] = {"chunk_size": chunk_size}
    child(["init", "--repo", str(repo), "--chunk-size", str(chunk_size), "--level", str(a.level), *common])
    print(f"[ours {tag}] full backup ...", flush=True)
    r["full"] = child(["backup", "--repo", str(repo), "--image", day1, "--rp", "day1", *common])
    r["stored_full"] = du(repo)
    subprocess.run(["cp", "-al", str(repo), str(repo_fallback)], check=True)
    print(f"[ours {tag}] second backup, CBT ...", flush=True)
    r["cbt"] = child(
        [
            *("backup", "--repo", str(repo), "--image", day2, "--rp", "day2", "--prev", "day1"),
            *("--extents", str(extents_file), *common),
        ]
    )
    r["stored_second"] = du(repo)
    print(f"[ours {tag}] second backup, whole-disk fallback ...", flush=True)
    r["fallback"] = child(
        ["backup", "--repo", str(repo_fallback), "--image", day2, "--rp", "day2", "--prev", "day1", *common]
    )
    r["stored_second_fallback"] = du(repo_fallback)
    shutil.rmtree(repo_fallback)
    if not a.no_restore:
        out = workdir / "restore-ours.img"
        print(f"[ours {tag}] restore ...", flush=True)
        r["restore"] = child(["restore", "--repo", str(repo), "--rp", "day2", "--out", str(out), *common])
        r["restore_ok"] = sha256_file(out) == meta["sha256_day2"]
        out.unlink()
        print(f"[ours {tag}] restore streamed to /dev/null ...", flush=True)
        r["stream"] = child(["restore", "--repo", str(repo), "--rp", "day2", "--out", os.devnull, *common])
    if not a.keep_repos:
        shutil.rmtree(repo)
    return r


def restic(workdir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    exe = shutil.which("restic")
    if exe is None:
        raise SystemExit("restic is not installed (apt-get install -y restic) or use --skip-restic")
    repo = workdir / "restic-repo"
    src_dir = workdir / "restic-src"
    target = workdir / "restic-restore"
    for d in (repo, src_dir, target):
        shutil.rmtree(d, ignore_errors=True)
    src_dir.mkdir()
    password = workdir / "restic-password"
    password.write_text(PASSPHRASE)
    env = dict(os.environ, RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD_FILE=str(password))
    env["RESTIC_CACHE_DIR"] = str(workdir / "restic-cache")
    env.pop("RESTIC_PASSWORD", None)
    r: dict[str, Any] = {"version": subprocess.run([exe, "version"], capture_output=True, text=True).stdout}
    run_measured([exe, "init", "-q"], env)
    src = src_dir / "disk.img"

    def link(image: str) -> None:
        tmp = src_dir / "disk.img.tmp"
        os.link(workdir / image, tmp)
        os.replace(tmp, src)

    link("day1.img")
    print("[restic] full backup ...", flush=True)
    settle()
    r["full"] = run_measured([exe, "backup", "-q", "--host", "bench", str(src)], env)
    r["stored_full"] = du(repo)
    link("day2.img")  # same path, new content: restic rescans the file
    print("[restic] second backup ...", flush=True)
    settle()
    r["second"] = run_measured([exe, "backup", "-q", "--host", "bench", str(src)], env)
    r["stored_second"] = du(repo)
    print("[restic] restore ...", flush=True)
    settle()
    r["restore"] = run_measured([exe, "restore", "-q", "latest", "--target", str(target)], env)
    restored = target / str(src).lstrip("/")
    r["restore_ok"] = sha256_file(restored) == meta["sha256_day2"]
    shutil.rmtree(target)
    print("[restic] dump to /dev/null ...", flush=True)
    settle()
    r["stream"] = run_measured([exe, "dump", "-q", "latest", str(src)], env, stdout_path=os.devnull)
    config = subprocess.run([exe, "cat", "config"], env=env, capture_output=True, text=True).stdout
    r["repo_version"] = json.loads(config).get("version") if config else None
    for run in ("full", "second", "restore", "stream"):
        r[run].pop("stdout", None)
    return r


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per measured operation, the repeat with the median wall time (sizes are identical across runs)."""
    merged = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, dict) and "wall" in value:
            ordered = sorted((r[key] for r in runs), key=lambda m: float(m["wall"]))
            merged[key] = ordered[len(ordered) // 2]
    return merged


# -- report --------------------------------------------------------------------------------------


def mbps(size: int, seconds: float) -> str:
    return f"{size / seconds / 1e6:,.0f}"


def report(results: dict[str, Any]) -> str:
    size = results["size"]
    raw = results["raw_read"]
    lines = [
        f"Disk image: {size / GiB:.2f} GiB; changed on day 2: {results['changed_bytes'] / MiB:.1f} MiB "
        f"in {results['changed_extents']} extents. Workers: {results['workers']}; "
        f"zstd level {results['level']}; {'unencrypted' if results['plain'] else 'encrypted'}.",
        "",
        f"Raw read of the source: sequential {mbps(size, size / raw['sequential'])} MB/s, "
        f"parallel pread {mbps(size, size / raw['parallel'])} MB/s.",
        "",
    ]
    ours_runs = results["ours"]
    rs = results.get("restic")
    primary = ours_runs[0]
    lines += [
        "| operation | ours: MB/s | ours: s | ours: CPU s | ours: peak RSS MiB | restic: MB/s | restic: s "
        "| restic: CPU s | restic: peak RSS MiB | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, mine: dict[str, Any] | None, theirs: dict[str, Any] | None) -> None:
        cells = [name]
        for run in (mine, theirs):
            if run is None:
                cells += ["-", "-", "-", "-"]
            else:
                cells += [
                    mbps(size, run["wall"]),
                    f"{run['wall']:.2f}",
                    f"{run['cpu']:.1f}",
                    f"{run['rss_mib']:.0f}",
                ]
        ratio = f"{theirs['wall'] / mine['wall']:.1f}x" if mine and theirs else "-"
        cells.append(ratio)
        lines.append("| " + " | ".join(cells) + " |")

    row("full backup", primary["full"], rs and rs["full"])
    row("second backup, CBT", primary["cbt"], rs and rs["second"])
    row("second backup, no CBT (whole disk)", primary["fallback"], rs and rs["second"])
    if "restore" in primary:
        row("restore (to a file)", primary["restore"], rs and rs["restore"])
        row("restore streamed to /dev/null (restic dump)", primary["stream"], rs and rs["stream"])
    lines += [""]
    if rs:
        lines += [
            f"Stored bytes after the first backup: ours {primary['stored_full'] / MiB:,.0f} MiB, "
            f"restic {rs['stored_full'] / MiB:,.0f} MiB; after the second: ours "
            f"{primary['stored_second'] / MiB:,.0f} MiB, restic {rs['stored_second'] / MiB:,.0f} MiB "
            f"(ratio {primary['stored_second'] / rs['stored_second']:.2f}). "
            f"Full backup vs raw parallel read: {size / primary['full']['wall'] / raw['parallel']:.0%}.",
            "",
        ]
    lines += [
        "| chunk size | full MB/s | stored after full MiB | CBT 2nd s | CBT 2nd chunks read | no-CBT 2nd s "
        "| stored after 2nd MiB | 2nd backup added MiB | restore MB/s | peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ours_runs:
        restore_rate = mbps(size, r["restore"]["wall"]) if "restore" in r else "-"
        peak = max(r[k]["rss_mib"] for k in ("full", "cbt", "fallback", "restore") if k in r)
        lines.append(
            f"| {r['chunk_size'] // 1024} KiB | {mbps(size, r['full']['wall'])} "
            f"| {r['stored_full'] / MiB:,.0f} "
            f"| {r['cbt']['wall']:.2f} | {r['cbt']['chunks_read']} | {r['fallback']['wall']:.2f} "
            f"| {r['stored_second'] / MiB:,.0f} | {(r['stored_second'] - r['stored_full']) / MiB:,.0f} "
            f"| {restore_rate} | {peak:.0f} |"
        )
    if rs:
        lines.append(
            f"| restic (CDC) | {mbps(size, rs['full']['wall'])} | {rs['stored_full'] / MiB:,.0f} "
            f"| {rs['second']['wall']:.2f} | - | - | {rs['stored_second'] / MiB:,.0f} "
            f"| {(rs['stored_second'] - rs['stored_full']) / MiB:,.0f} | {mbps(size, rs['restore']['wall'])} "
            f"| {max(rs[k]['rss_mib'] for k in ('full', 'second', 'restore')):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        _child_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="4G", help="disk image size (e.g. 512M, 4G)")
    p.add_argument("--chunk-sizes", default="1M", help="comma-separated, e.g. 1M,2M,4M (first = headline)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--level", type=int, default=1, help="zstd level")
    scratch = "/tmp/vmr-bench"  # noqa: S108 - scratch space outside the tree, overridable
    p.add_argument("--workdir", default=scratch, help="scratch directory (images, repositories)")
    p.add_argument("--plain", action="store_true", help="unencrypted repository (restic always encrypts)")
    p.add_argument("--skip-restic", action="store_true")
    p.add_argument("--no-fsync", action="store_true", help="diagnostic: our writes without fsync")
    p.add_argument("--no-restore", action="store_true")
    p.add_argument("--keep-repos", action="store_true")
    p.add_argument("--repeat", type=int, default=1, help="runs of the headline size and restic (median)")
    a = p.parse_args()
    workdir = Path(a.workdir)
    if workdir.resolve().is_relative_to(ROOT):
        raise SystemExit("keep the work directory out of the source tree")
    workdir.mkdir(parents=True, exist_ok=True)
    size = parse_size(a.size)
    meta = generate_images(workdir, size)
    print(f"composition (bytes): {meta['composition']}", flush=True)
    results: dict[str, Any] = {
        "size": size,
        "workers": a.workers,
        "level": a.level,
        "plain": a.plain,
        "no_fsync": a.no_fsync,
        "changed_bytes": meta["changed_bytes"],
        "changed_extents": len(meta["changed_extents"]),
        "cpus": os.cpu_count(),
    }
    print("raw read ...", flush=True)
    results["raw_read"] = raw_read(workdir / "day1.img", a.workers)
    sizes = [parse_size(cs) for cs in a.chunk_sizes.split(",")]
    headline = [ours(workdir, meta, sizes[0], a) for _ in range(a.repeat)]
    results["ours"] = [median_run(headline)] + [ours(workdir, meta, cs, a) for cs in sizes[1:]]
    results["ours_repeats"] = headline
    if not a.skip_restic:
        runs = [restic(workdir, meta) for _ in range(a.repeat)]
        results["restic"] = median_run(runs)
        results["restic_repeats"] = runs
    (workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print()
    print(report(results))


if __name__ == "__main__":
    main()
