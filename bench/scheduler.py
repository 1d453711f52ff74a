"""Benchmark: the scheduler, the agent channel and the read API at 10,000 VMs, on PostgreSQL.

    python bench/scheduler.py [--vms 10000] [--days 90] [--proxies 50] [--replicas 1,2] [--keep-db]
    python bench/scheduler.py --vms 1000 --days 7 --replicas 1 --rate 50 --duration 10   # quick check

What it does (the figures of the scale issue; it reports what it reaches and asserts nothing):

1. Creates its own scratch database (``--db``, default ``vmr_bench``; refuses any name not starting
   with ``vmr_bench``), runs ``vmrecovery migrate``, and generates the catalog with COPY
   (``bench/scheduler_seed.py``): 1 tenant, 1 vCenter, 50 hosts, 100 datastores, 10,000 VMs,
   20 folder-selected policies (daily 22:00 UTC, window 22:00 + 24 h, so that the day's jobs are
   in their window whenever the bench runs), protection computed with
   ``recompute_protection`` (timed), and ``--days`` days of history: a job and a restore point per
   VM and day (~1% failed days with their RPO breaches), one protection span per VM.
2. Starts ``vmrecovery serve --no-embedded-proxy --no-loops`` and registers ``--proxies`` proxies
   through ``POST /api/v1/proxies`` (one host each).
3. **Planning tick**: ``PlannerLoop.run_once()`` in this process with a ``ManualClock`` one minute
   after the latest 22:00 slot (each policy's ``last_planned_slot`` is the slot before), timed
   until the jobs are queued (the planner's ``plan_s``; its statistics refresh after the commit
   is timed apart), with SQL time per statement from engine events; ``--ticks`` times (the day's
   jobs deleted and the table vacuumed in between), each after a ``CHECKPOINT``.
4. **Dispatch**: light agent processes (``bench/scheduler_load.py agents``) claim through the real
   HTTP API and complete each job at once as succeeded (a load generator standing in for real
   data movement). Measured from the first claim to the last job succeeded (job timestamps in
   the catalog), with the CPU of every process and a py-spy profile of the server(s).
   With ``--replicas 1,2`` the day is re-planned and dispatched again through two ``serve``
   replicas, proxies split between them (the product's scaling model).
5. **RPO report**: ``GET /api/v1/compliance/rpo?tenant_id=...`` for the whole tenant, sequentially,
   with the default page, ``limit=500`` and ``group_by=policy``; p50/p95/p99.
6. **Mixed reads**: an open-loop generator (``bench/scheduler_load.py reads``) at ``--rate``
   requests/s for ``--duration`` s of list/detail reads, spread round-robin over every replica
   still running (as a load balancer would); p50/p95/p99 and errors.

Everything runs on this machine against loopback; every process is bounded in time and stopped
at the end, and the scratch database is dropped unless ``--keep-db``. Results are printed as
Markdown and saved as JSON in ``--workdir``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import math
import os
import pstats
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.auth.principal import Principal, Role  # noqa: E402
from app.clock import ManualClock, SystemClock  # noqa: E402
from app.compliance.service import ComplianceService, GroupBy  # noqa: E402
from app.contracts.agent import RepositoryAccess  # noqa: E402
from app.crypto import SecretBox  # noqa: E402
from app.db.engine import create_engine, create_sessionmaker  # noqa: E402
from app.jobs.agent_channel import AgentChannel, Limits  # noqa: E402
from app.pagination import PageRequest  # noqa: E402
from app.policies.protection import recompute_protection  # noqa: E402
from app.proxies.models import Proxy  # noqa: E402
from app.scheduler.planner import PlannerLoop  # noqa: E402
from bench.scheduler_load import MIX, request_for  # noqa: E402
from bench.scheduler_seed import latest_slot, seed_history, seed_inventory  # noqa: E402

SECRET_KEY = "bench-secret-key-not-for-production"  # noqa: S105 - throwaway scratch catalog
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
BIN = Path(sys.executable).parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- small helpers --------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (NaN for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:,.1f}"


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


class SqlTimer:
    """Wall time of every statement this engine runs, grouped by statement text."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seconds: Counter[str] = Counter()
        self.count: Counter[str] = Counter()
        sync = engine.sync_engine
        event.listen(sync, "before_cursor_execute", self._before)
        event.listen(sync, "after_cursor_execute", self._after)

    def reset(self) -> None:
        self.seconds.clear()
        self.count.clear()

    @staticmethod
    def _before(conn: Any, _cursor: Any, _statement: str, *_: Any) -> None:
        conn.info.setdefault("bench_t", []).append(time.perf_counter())

    def _after(self, conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        elapsed = time.perf_counter() - conn.info["bench_t"].pop()
        key = " ".join(statement.split())
        key = re.sub(r"\(\$\d+::[A-Z]+(, \$\d+::[A-Z]+)*\)", "(...)", key)[:110]
        self.seconds[key] += elapsed
        self.count[key] += 1

    def summary(self, top: int = 6) -> dict[str, Any]:
        return {
            "sql_s": sum(self.seconds.values()),
            "statements": sum(self.count.values()),
            "top": [
                {"statement": k, "seconds": s, "count": self.count[k]}
                for k, s in self.seconds.most_common(top)
            ],
        }


# -- CPU accounting ---------------------------------------------------------------------------------


def _proc_cpu(pid: int, part: str = "all") -> float:
    """CPU seconds of a process: user + system (``part="all"``) or system only (``"sys"``)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    user, system = int(fields[11]), int(fields[12])
    return (system if part == "sys" else user + system) / CLK_TCK


def _postgres_cpu() -> float:
    """CPU seconds of the whole PostgreSQL server so far: the postmaster, its live processes, and
    those that ended (a backend of a closed connection is reaped by the postmaster, whose
    children's times then hold it). Counting only the live backends of one database, as an
    earlier version did, lost every pool connection closed during a run."""
    postmaster = None
    for pid_file in Path("/var/run/postgresql").glob("*.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int(pid_file.read_text().split()[0])
    if postmaster is None:
        return math.nan
    try:
        fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    total = sum(int(v) for v in fields[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def _machine_busy() -> tuple[float, float]:
    values = _cpu_times()
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def _cpu_times() -> list[int]:
    """The machine's cpu line of /proc/stat: user nice system idle iowait irq softirq steal ..."""
    return [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]


class StealSampler:
    """The machine's CPU use and steal (time the hypervisor gave this VM's CPUs to others) in each
    second of a run, so that a slow second can be told apart: our own work, or a host that took
    the CPUs away."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, list[int]]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self, at: float) -> None:
        """Sample at ``at`` (the run's start on the loop's clock) and every second after it."""
        self._task = asyncio.create_task(self._run(at))

    async def _run(self, at: float) -> None:
        loop = asyncio.get_running_loop()
        k = 0
        while True:
            delay = at + k - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            self.samples.append((loop.time() - at, _cpu_times()))
            k += 1

    async def stop(self) -> list[dict[str, float]]:
        """Per second: ``steal_pct`` and ``busy_pct`` (neither idle nor stolen) of all CPUs."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        out = []
        for (t0, a), (_, b) in zip(self.samples, self.samples[1:], strict=False):
            d = [y - x for x, y in zip(a, b, strict=False)]
            total = sum(d[:8]) or 1
            steal, idle = d[7], d[3] + d[4]
            out.append(
                {
                    "second": round(t0),
                    "steal_pct": 100 * steal / total,
                    "busy_pct": 100 * (total - idle - steal) / total,
                }
            )
        return out


class CpuMeter:
    """CPU seconds used by groups of processes between start() and stop()."""

    def __init__(self, db: str, groups: dict[str, list[int]]) -> None:
        self.db = db
        self.groups = groups

    def _snapshot(self) -> dict[str, float]:
        out = {name: sum(_proc_cpu(p) for p in pids) for name, pids in self.groups.items()}
        for name, pids in self.groups.items():
            out[f"{name}, kernel part"] = sum(_proc_cpu(p, "sys") for p in pids)
        out["postgres (whole server)"] = _postgres_cpu()
        # Load processes are waited for before stop(): their time is in the reaped children's.
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        out["reaped children"] = children.ru_utime + children.ru_stime
        busy, total = _machine_busy()
        out["machine busy"], out["machine total"] = busy, total
        return out

    def start(self) -> None:
        self.before = self._snapshot()
        self.t0 = time.perf_counter()

    def stop(self) -> dict[str, float]:
        after = self._snapshot()
        wall = time.perf_counter() - self.t0
        used = {k: after[k] - self.before[k] for k in after}
        total = used.pop("machine total")
        used["machine busy"] = used["machine busy"] / total * os.cpu_count() * wall if total else 0.0
        return {"wall_s": wall, **used}


class PgSampler:
    """What this database's backends are doing, sampled every ``interval_s`` (pg_stat_activity)."""

    def __init__(self, db: str, interval_s: float = 0.1) -> None:
        self.db = db
        self.interval_s = interval_s
        self.samples = 0
        self.seen: Counter[str] = Counter()
        self._stop = asyncio.Event()

    async def run(self) -> None:
        conn = await asyncpg.connect(database=self.db, **PG)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    """SELECT state, wait_event_type, wait_event, count(*) AS n FROM pg_stat_activity
                       WHERE datname = $1 AND pid <> pg_backend_pid() AND state IS NOT NULL
                       GROUP BY 1, 2, 3""",
                    self.db,
                )
                self.samples += 1
                for r in rows:
                    if r["state"] == "idle":
                        continue
                    wait = (
                        f" waiting {r['wait_event_type']}:{r['wait_event']}" if r["wait_event_type"] else ""
                    )
                    self.seen[f"{r['state']}{wait}"] += r["n"]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=self.interval_s)
        finally:
            await conn.close()

    def summary(self) -> dict[str, float]:
        """Average number of backends in each state (idle ones left out)."""
        return {k: round(v / max(1, self.samples), 2) for k, v in self.seen.most_common(10)}

    def stop(self) -> None:
        self._stop.set()


# -- py-spy -------------------------------------------------------------------------------------------


class Spy:
    """py-spy sampling one process (on-CPU samples only) until stopped."""

    def __init__(self, pid: int, out: Path, rate: int) -> None:
        self.out = out
        exe = shutil.which("py-spy") or str(BIN / "py-spy")
        self.proc: subprocess.Popen[bytes] | None = None
        if Path(exe).exists():
            self.proc = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--duration",
                    "900",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def stop(self) -> dict[str, Any] | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return summarize_profile(self.out) if self.out.exists() else None


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def _package(filename: str) -> str:
    f = filename
    for marker in ("site-packages/", "/work/main/", "python3.11/"):
        if marker in f:
            f = f.split(marker, 1)[1]
    parts = f.split("/")
    if parts[0] in ("sqlalchemy", "app") and len(parts) > 2:
        return ".".join(parts[:2])
    if parts[0] == "app":
        return f.removesuffix(".py").replace("/", ".")
    return parts[0].removesuffix(".py")


def summarize_profile(path: Path, top: int = 18) -> dict[str, Any]:
    """Self time by package and inclusive time of the app's functions, as shares of samples."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [m for m in (_FRAME.match(f) for f in stack.split(";")) if m]
        if not frames:
            continue
        self_time[_package(frames[-1]["file"])] += count
        leaf[f"{frames[-1]['func']} ({frames[-1]['file'].rsplit('site-packages/', 1)[-1]})"] += count
        seen = set()
        for m in frames:
            name = f"{_package(m['file'])}:{m['func']}"
            interesting = name.startswith("app") and not name.startswith("app.cli")
            if (interesting or "AsyncAdapt" in name or "run_in_threadpool" in name) and name not in seen:
                seen.add(name)
                inclusive[name] += count
    share = (lambda n: round(100.0 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "self_by_package": [(k, share(v)) for k, v in self_time.most_common(top)],
        "inclusive_app": [(k, share(v)) for k, v in inclusive.most_common(top)],
        "top_leaf": [(k, share(v)) for k, v in leaf.most_common(12)],
    }


# -- processes ----------------------------------------------------------------------------------------


class Server:
    def __init__(self, port: int, env: dict[str, str], workdir: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = (workdir / f"serve-{port}.log").open("wb")
        self.proc = subprocess.Popen(
            [str(BIN / "vmrecovery"), "serve", "--no-embedded-proxy", "--no-loops", "--port", str(port)],
            env={**env, "VMR_DATA_DIR": str(workdir / f"serve-{port}")},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient() as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve on port {self.port} exited; see {self.log.name}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(self.url + "/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.3)
        raise RuntimeError(f"serve on port {self.port} not ready after {timeout_s} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def spawn_load(command: str, options: dict[str, Any]) -> subprocess.Popen[bytes]:
    """Start ``bench/scheduler_load.py <command>`` (agents or reads) as its own process."""
    argv = [sys.executable, str(ROOT / "bench" / "scheduler_load.py"), command]
    for name, value in options.items():
        argv += [name, str(value)]
    return subprocess.Popen(argv)


def migrate(env: dict[str, str], workdir: Path) -> None:
    subprocess.run(
        [str(BIN / "vmrecovery"), "migrate"], env={**env, "VMR_DATA_DIR": str(workdir)}, check=True
    )


def server_env(args: argparse.Namespace, url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMR_")}
    env.update(
        VMR_DATABASE_URL=url,
        VMR_SECRET_KEY=SECRET_KEY,
        VMR_AUTO_MIGRATE="false",
        VMR_LOG_LEVEL="warning",
        VMR_LIMIT_PER_HOST=str(args.limit_per_host),
        VMR_LIMIT_PER_DATASTORE=str(args.limit_per_datastore),
        VMR_LIMIT_GLOBAL=str(args.limit_global),
    )
    return env


# -- database -----------------------------------------------------------------------------------------


async def recreate_database(name: str) -> None:
    conn = await asyncpg.connect(database="postgres", **PG)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(name: str) -> None:
    conn = await asyncpg.connect(database="postgres", **PG)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


# -- measurements -------------------------------------------------------------------------------------


async def register_proxies(server: str, key: str, host_ids: list[Any], count: int) -> list[dict[str, Any]]:
    proxies = []
    async with httpx.AsyncClient(
        base_url=server + "/api/v1", headers={"Authorization": f"Bearer {key}"}
    ) as c:
        for i in range(count):
            hosts = [str(h) for h in host_ids[i::count]]
            response = await c.post(
                "/proxies", json={"name": f"proxy-{i:03d}", "host_ids": hosts, "max_concurrent_jobs": 2}
            )
            response.raise_for_status()
            body = response.json()
            proxies.append({"name": body["name"], "id": body["id"], "token": body["token"], "hosts": hosts})
    return proxies


def cpu_probe() -> float:
    """Seconds for a fixed pure-Python loop: how fast this (shared, virtual) machine is right now.
    The same code varied by 40% within an hour here, so results carry this with them."""
    started = time.perf_counter()
    total = 0
    for i in range(5_000_000):
        total += i
    return round(time.perf_counter() - started, 3)


async def plan_tick(
    engine: AsyncEngine, admin: asyncpg.Connection, timer: SqlTimer, t0: datetime, profile: bool
) -> dict[str, Any]:
    clock = ManualClock(t0 + timedelta(minutes=1))
    loop = PlannerLoop(create_sessionmaker(engine), clock)
    timer.reset()
    profiler = cProfile.Profile() if profile else None
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    await loop.run_once()
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {
        "seconds": elapsed,
        "jobs_created": await admin.fetchval("SELECT count(*) FROM jobs WHERE scheduled_for = $1", t0),
        "planner_reported_jobs": loop.last_report.jobs_created,
        "policies_planned": loop.last_report.policies_planned,
        # The tick proper ends when the jobs are queued (committed); the planner then refreshes
        # the jobs table's state statistics, timed apart.
        "plan_s": loop.last_report.plan_s,
        "statistics_s": loop.last_report.statistics_s,
        "profiled": profile,
        **timer.summary(),
    }
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
        out["cprofile_tottime"] = text.getvalue()
    return out


async def claim_in_isolation(
    args: argparse.Namespace, engine: AsyncEngine, timer: SqlTimer, proxies: list[dict[str, Any]], n: int = 12
) -> dict[str, Any]:
    """One proxy's claim with nothing else running (the day's jobs all queued), rolled back:
    the length of the claim's critical section without contention, and its statements."""
    limits = Limits(args.limit_per_host, args.limit_per_datastore, args.limit_global)
    runs = []
    for i in range(n):
        async with create_sessionmaker(engine)() as session:
            proxy = await session.get(Proxy, uuid.UUID(proxies[i % len(proxies)]["id"]))
            assert proxy is not None
            channel = AgentChannel(
                session,
                SystemClock(),
                SecretBox(SECRET_KEY),
                120.0,
                RepositoryAccess(url="file:///bench"),
                limits,
            )
            timer.reset()
            started = time.perf_counter()
            jobs = await channel.claim(proxy, 2)
            elapsed = time.perf_counter() - started
            runs.append({"seconds": elapsed, "jobs": len(jobs), **timer.summary(5)})
            await session.rollback()
    runs = runs[2:]
    best = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
    return {"median_s": best["seconds"], "runs": len(runs), **best}


async def idle_latency(server: Server, ids: dict[str, Any], n: int = 12) -> dict[str, Any]:
    """Each kind of read alone, one request at a time (service time without queueing)."""
    rnd = random.Random(5)
    out = {}
    kinds = [k for k, _ in MIX] + ["restore points page (tenant)"]
    async with httpx.AsyncClient(
        base_url=server.url + "/api/v1",
        headers={"Authorization": f"Bearer {ids['operator_key']}"},
        timeout=60,
    ) as client:
        for kind in kinds:
            latencies = []
            for i in range(n):
                path, params = request_for(kind, rnd, ids)
                started = time.perf_counter()
                response = await client.get(path, params=params)
                if i >= 2:
                    latencies.append(time.perf_counter() - started)
                response.raise_for_status()
            out[kind] = {"p50_s": pct(latencies, 50), "max_s": max(latencies)}
    return out


async def reset_day(admin: asyncpg.Connection, t0: datetime) -> None:
    """Forget the dispatched day so that it can be planned and dispatched again."""
    await admin.execute(
        "DELETE FROM restore_points WHERE job_id IN (SELECT id FROM jobs WHERE scheduled_for = $1)", t0
    )
    await admin.execute("DELETE FROM jobs WHERE scheduled_for = $1", t0)
    await admin.execute("UPDATE policies SET last_planned_slot = $1", t0 - timedelta(days=1))
    await admin.execute("VACUUM (ANALYZE) jobs, restore_points")


async def dispatch(
    args: argparse.Namespace,
    admin: asyncpg.Connection,
    servers: list[Server],
    proxies: list[dict[str, Any]],
    t0: datetime,
    tag: str,
) -> dict[str, Any]:
    workdir: Path = args.workdir
    assignment = [{**p, "server": servers[i % len(servers)].url} for i, p in enumerate(proxies)]
    proxies_file = workdir / f"proxies-{tag}.json"
    proxies_file.write_text(json.dumps(assignment))
    planned = await admin.fetchval("SELECT count(*) FROM jobs WHERE scheduled_for = $1", t0)
    groups = [list(range(len(proxies)))[i :: args.agent_procs] for i in range(args.agent_procs)]
    spies = (
        [Spy(s.proc.pid, workdir / f"spy-dispatch-{tag}-{s.port}.txt", args.spy_rate) for s in servers]
        if args.profile
        else []
    )
    agents: list[tuple[subprocess.Popen[bytes], Path]] = []
    started = time.time()
    for n, members in enumerate(groups):
        if not members:
            continue
        sub = [assignment[i] for i in members]
        sub_file = workdir / f"proxies-{tag}-{n}.json"
        sub_file.write_text(json.dumps(sub))
        out = workdir / f"agents-{tag}-{n}.json"
        options = {"--proxies": sub_file, "--count": len(sub), "--max-seconds": args.dispatch_timeout + 30}
        agents.append((spawn_load("agents", {**options, "--out": out}), out))
    meter = CpuMeter(
        args.db,
        {"serve replica(s)": [s.proc.pid for s in servers], "agent processes": [p.pid for p, _ in agents]},
    )
    meter.start()
    sampler = PgSampler(args.db)
    sampling = asyncio.create_task(sampler.run())
    timeline = []
    deadline = time.monotonic() + args.dispatch_timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rows = await admin.fetch(
            "SELECT state, count(*) FROM jobs WHERE scheduled_for = $1 GROUP BY state", t0
        )
        states = {r["state"]: r["count"] for r in rows}
        timeline.append((round(time.time() - started, 1), states.get("succeeded", 0)))
        if not states.get("queued") and not states.get("running"):
            break
    cpu = meter.stop()
    sampler.stop()
    await sampling
    profiles = [spy.stop() for spy in spies]
    for proc, _ in agents:
        proc.send_signal(signal.SIGTERM)
    stats: list[dict[str, Any]] = []
    for proc, out in agents:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            stats.extend(json.loads(out.read_text()))
    row = await admin.fetchrow(
        """SELECT count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
                  count(*) FILTER (WHERE state NOT IN ('succeeded', 'queued', 'running')) AS other,
                  min(started_at) AS first_start, max(finished_at) AS last_finish,
                  max(attempt) AS max_attempt
           FROM jobs WHERE scheduled_for = $1""",
        t0,
    )
    points = await admin.fetchval(
        "SELECT count(*) FROM restore_points WHERE job_id IN (SELECT id FROM jobs WHERE scheduled_for = $1)",
        t0,
    )
    span = (row["last_finish"] - row["first_start"]).total_seconds() if row["first_start"] else math.nan
    claims = [s for p in stats for s in p.get("claim_s", [])]
    completes = [s for p in stats for s in p.get("complete_s", [])]
    per_proxy_end = [p["last_complete_at"] - started for p in stats if p.get("last_complete_at")]
    return {
        "replicas": len(servers),
        "planned": planned,
        "succeeded": row["succeeded"],
        "other_terminal": row["other"],
        "max_attempt": row["max_attempt"],
        "restore_points_recorded": points,
        "first_claim_to_last_success_s": span,
        "jobs_per_s": row["succeeded"] / span if span and not math.isnan(span) else math.nan,
        "claims": sum(p.get("claims", 0) for p in stats),
        "empty_claims": sum(p.get("empty_claims", 0) for p in stats),
        "claim_p50_s": pct(claims, 50),
        "claim_p95_s": pct(claims, 95),
        "claim_p99_s": pct(claims, 99),
        "complete_p50_s": pct(completes, 50),
        "complete_p95_s": pct(completes, 95),
        "complete_p99_s": pct(completes, 99),
        "errors": [e for p in stats for e in p.get("errors", [])][:20],
        "error_count": sum(len(p.get("errors", [])) for p in stats),
        "crashed_proxies": [p for p in stats if "crashed" in p],
        "proxy_done_p50_s": pct(per_proxy_end, 50),
        "proxy_done_max_s": max(per_proxy_end, default=math.nan),
        "cpu": cpu,
        "pg_backends": sampler.summary(),
        "timeline": timeline[:: max(1, len(timeline) // 40)],
        "profiles": profiles,
    }


async def rpo_report(args: argparse.Namespace, server: Server, key: str, tenant_id: str) -> dict[str, Any]:
    variants = {
        "default page (limit 50)": {"tenant_id": tenant_id},
        "limit=500": {"tenant_id": tenant_id, "limit": 500},
        "group_by=policy": {"tenant_id": tenant_id, "group_by": "policy"},
    }
    out: dict[str, Any] = {}
    spy = Spy(server.proc.pid, args.workdir / "spy-rpo.txt", args.spy_rate) if args.profile else None
    async with httpx.AsyncClient(
        base_url=server.url + "/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60
    ) as client:
        for name, params in variants.items():
            for _ in range(3):
                (await client.get("/compliance/rpo", params=params)).raise_for_status()
            latencies = []
            size = 0
            total = None
            for _ in range(args.rpo_requests):
                started = time.perf_counter()
                response = await client.get("/compliance/rpo", params=params)
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
                size = len(response.content)
                total = response.json().get("total")
            out[name] = {
                "n": len(latencies),
                "p50_s": pct(latencies, 50),
                "p95_s": pct(latencies, 95),
                "p99_s": pct(latencies, 99),
                "max_s": max(latencies),
                "bytes": size,
                "total": total,
            }
    out["profile"] = spy.stop() if spy else None
    return out


async def rpo_in_process(engine: AsyncEngine, timer: SqlTimer, tenant_id: Any) -> dict[str, Any]:
    """The same report called in this process, to split SQL from Python time."""
    principal = Principal(key_id=None, role=Role.OPERATOR, tenant_id=None)  # type: ignore[arg-type]
    runs = []
    for _ in range(4):
        timer.reset()
        async with create_sessionmaker(engine)() as session:
            started = time.perf_counter()
            await ComplianceService(session, SystemClock()).rpo_report(
                principal, tenant_id=tenant_id, group_by=GroupBy.VM, page=PageRequest()
            )
            runs.append({"seconds": time.perf_counter() - started, **timer.summary(4)})
    return min(runs[1:], key=lambda r: r["seconds"])


async def mixed_reads(
    args: argparse.Namespace,
    servers: list[Server],
    ids: dict[str, Any],
    rate: float,
    duration: float,
    profile: bool,
) -> dict[str, Any]:
    """Open-loop reads spread round-robin over ``servers`` (a load balancer's simplest policy)."""
    server = servers[0]
    ids_file = args.workdir / "ids.json"
    ids_file.write_text(json.dumps(ids))
    out = args.workdir / f"reads-{rate:g}.json"
    spy = Spy(server.proc.pid, args.workdir / f"spy-reads-{rate:g}.txt", args.spy_rate) if profile else None
    options = {
        "--server": ",".join(s.url for s in servers),
        "--ids": ids_file,
        "--rate": rate,
        "--duration": duration,
    }
    options["--exclude"] = args.exclude
    gen = spawn_load("reads", {**options, "--out": out})
    # The generator has exited by stop(): its CPU is counted as a reaped child.
    meter = CpuMeter(args.db, {"serve": [s.proc.pid for s in servers]})
    meter.start()
    try:
        await asyncio.to_thread(gen.wait, duration + 90)
    except subprocess.TimeoutExpired:
        gen.kill()
        gen.wait()
    cpu = meter.stop()
    profile = spy.stop() if spy else None
    data = json.loads(out.read_text())
    results = data["results"]
    ok = [r for r in results if r["status"] == 200]
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in ok:
        by_kind[r["kind"]].append(r["latency_s"])
    latencies = [r["latency_s"] for r in ok]
    return {
        "rate": rate,
        "replicas": len(servers),
        "duration_s": duration,
        "sent": data["sent"],
        "answered": len(results),
        "ok": len(ok),
        "errors": Counter(r["error"] or str(r["status"]) for r in results if r["status"] != 200),
        "achieved_rps": len(results) / data["elapsed_s"] if data["elapsed_s"] else math.nan,
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "p99_s": pct(latencies, 99),
        "max_s": max(latencies, default=math.nan),
        "service_p99_s": pct([r["service_s"] for r in ok], 99),
        "send_lag_p99_s": pct([r["lag_s"] for r in results], 99),
        "by_kind": {
            k: {"n": len(v), "p50_s": pct(v, 50), "p95_s": pct(v, 95), "p99_s": pct(v, 99)}
            for k, v in sorted(by_kind.items())
        },
        "cpu": cpu,
        "profile": profile,
    }


# -- report ---------------------------------------------------------------------------------------------


def cpu_cell(cpu: dict[str, float]) -> str:
    available = cpu["wall_s"] * (os.cpu_count() or 1)
    used = [
        cpu["serve replica(s)"],
        cpu["postgres (whole server)"],
        cpu["agent processes"],
        cpu["machine busy"],
    ]
    return " / ".join(f"{u:.0f}" for u in used) + f" of {available:.0f}"


def _reads_cpu_cell(reads: dict[str, Any]) -> str:
    cpu, answered = reads["cpu"], max(1, reads["answered"])
    per = [cpu["serve"], cpu["postgres (whole server)"], cpu["reaped children"]]
    busy = cpu["machine busy"] / (cpu["wall_s"] * (os.cpu_count() or 1))
    return " / ".join(f"{1000 * v / answered:.1f}" for v in per) + f"; {busy:.0%}"


def report(results: dict[str, Any]) -> str:
    parts = []
    machine = results["machine"]
    parts.append(
        f"Machine: {machine['cpus']} CPUs, load {machine['loadavg_start'][0]:.2f} at the start and "
        f"{machine.get('loadavg_end', [float('nan')])[0]:.2f} at the end; CPU probe (5M-step Python "
        f"loop) {machine['cpu_probe_s_start']:.2f} s at the start, "
        f"{machine.get('cpu_probe_s_end', float('nan')):.2f} s at the end."
    )
    setup = results["setup"]
    parts.append(
        table(
            ["set-up step", "seconds", "rows"],
            [
                ["inventory + policies (COPY)", f"{setup['inventory_s']:.1f}", setup["vms"]],
                ["recompute_protection (one session)", f"{setup['protection_s']:.2f}", setup["protected"]],
                ["history (COPY)", f"{setup['history_s']:.1f}", json.dumps(setup["history"])],
            ],
        )
    )
    rows = []
    for tick in results["plan_ticks"]:
        top = tick["top"][0] if tick["top"] else {"statement": "-", "seconds": 0, "count": 0}
        rows.append(
            [
                f"{tick['plan_s']:.3f}" + (" (cProfile on)" if tick["profiled"] else ""),
                f"{tick['statistics_s']:.3f}",
                tick["jobs_created"],
                tick["statements"],
                f"{tick['sql_s']:.3f}",
                f"{top['statement'][:60]}... x{top['count']}: {top['seconds']:.3f} s",
            ]
        )
    headers = ["planning tick s (jobs queued)", "then statistics s", "jobs created", "SQL statements"]
    parts.append(table([*headers, "SQL s", "top statement"], rows))
    rows = []
    for d in results["dispatch"]:
        cpu = d["cpu"]
        rows.append(
            [
                d["replicas"],
                f"{d['succeeded']}/{d['planned']}",
                f"{d['first_claim_to_last_success_s']:.1f}",
                f"{d['jobs_per_s']:.0f}",
                d["claims"],
                d["empty_claims"],
                f"{ms(d['claim_p50_s'])} / {ms(d['claim_p95_s'])} / {ms(d['claim_p99_s'])}",
                f"{ms(d['complete_p50_s'])} / {ms(d['complete_p95_s'])} / {ms(d['complete_p99_s'])}",
                d["error_count"],
                cpu_cell(cpu),
            ]
        )
    parts.append(
        table(
            [
                "replicas",
                "succeeded",
                "first claim → last success s",
                "jobs/s",
                "claims",
                "empty claims",
                "claim ms p50/p95/p99",
                "complete ms p50/p95/p99",
                "errors",
                "CPU s: serve / postgres / agents / machine busy of available",
            ],
            rows,
        )
    )
    rpo = results.get("rpo", {})
    rows = [
        [
            name,
            v["n"],
            ms(v["p50_s"]),
            ms(v["p95_s"]),
            ms(v["p99_s"]),
            ms(v["max_s"]),
            f"{v['bytes']:,}",
            v["total"],
        ]
        for name, v in rpo.items()
        if isinstance(v, dict) and "p50_s" in v
    ]
    parts.append(
        table(
            [
                "GET /compliance/rpo (whole tenant)",
                "n",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "bytes",
                "total",
            ],
            rows,
        )
    )
    alone = results.get("claim_alone")
    if alone:
        top = "; ".join(
            f"{t['statement'][:50]}... x{t['count']} {ms(t['seconds'])} ms" for t in alone["top"][:3]
        )
        parts.append(
            table(
                ["one claim alone (day queued)", "ms", "jobs", "statements", "SQL ms", "top statements"],
                [
                    [
                        "median",
                        ms(alone["median_s"]),
                        alone["jobs"],
                        alone["statements"],
                        ms(alone["sql_s"]),
                        top,
                    ]
                ],
            )
        )
    idle = results.get("idle_latency", {})
    rows = [[k, ms(v["p50_s"]), ms(v["max_s"])] for k, v in idle.items()]
    parts.append(table(["read alone (sequential)", "p50 ms", "max ms"], rows))
    rows = []
    for reads in [r for r in [*results.get("reads_sweep", []), results.get("reads")] if r]:
        rows.append(
            [
                f"{reads['rate']:g}/s for {reads['duration_s']:g} s, {reads.get('replicas', 1)} replica(s)",
                reads["sent"],
                reads["ok"],
                reads["sent"] - reads["answered"],
                dict(reads["errors"]),
                f"{reads['achieved_rps']:.0f}",
                ms(reads["p50_s"]),
                ms(reads["p95_s"]),
                ms(reads["p99_s"]),
                ms(reads["max_s"]),
                _reads_cpu_cell(reads),
            ]
        )
    headers = ["mixed reads (open loop)", "sent", "ok", "unanswered", "errors", "answered/s"]
    cpu_header = "CPU ms per answered read: serve / postgres / generator; machine busy"
    parts.append(table([*headers, "p50 ms", "p95 ms", "p99 ms", "max ms", cpu_header], rows))
    reads = results.get("reads")
    if reads:
        rows = [
            [k, v["n"], ms(v["p50_s"]), ms(v["p95_s"]), ms(v["p99_s"])] for k, v in reads["by_kind"].items()
        ]
        parts.append(table(["headline rate, by kind", "ok", "p50 ms", "p95 ms", "p99 ms"], rows))
    return "\n\n".join(parts)


# -- main -------------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{args.db}"
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "plan_ticks": [],
        "dispatch": [],
    }
    results["machine"] = {
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "cpu_probe_s_start": cpu_probe(),
    }
    log(f"creating database {args.db} and migrating")
    await recreate_database(args.db)
    env = server_env(args, url)
    migrate(env, args.workdir)
    engine = create_engine(url)
    timer = SqlTimer(engine)
    admin = await asyncpg.connect(database=args.db, **PG)
    servers: list[Server] = []
    try:
        t0 = latest_slot(datetime.now(UTC))
        started = time.perf_counter()
        cat = await seed_inventory(
            admin, SecretBox(SECRET_KEY), vms=args.vms, hosts=args.hosts, policies=args.policies, t0=t0
        )
        setup: dict[str, Any] = {"vms": args.vms, "inventory_s": time.perf_counter() - started}
        started = time.perf_counter()
        async with create_sessionmaker(engine).begin() as session:
            setup["protected"] = await recompute_protection(session, cat.tenant_id)
        setup["protection_s"] = time.perf_counter() - started
        log(
            f"inventory in {setup['inventory_s']:.1f} s, protection of {setup['protected']} VMs in "
            f"{setup['protection_s']:.2f} s; starting serve"
        )
        servers.append(Server(args.port, env, args.workdir))
        await servers[0].ready()
        proxies = await register_proxies(servers[0].url, cat.operator_key, cat.host_ids, args.proxies)
        for p in proxies:
            for h in p["hosts"]:
                cat.proxy_of_host[next(x for x in cat.host_ids if str(x) == h)] = p["id"]
        started = time.perf_counter()
        setup["history"] = await seed_history(admin, cat, 0 if args.skip_history else args.days)
        await admin.execute("VACUUM (ANALYZE)")
        setup["history_s"] = time.perf_counter() - started
        results["setup"] = setup
        log(f"history {setup['history']} in {setup['history_s']:.1f} s")
        replicas = [int(r) for r in args.replicas.split(",") if r] or [0]
        for n, count in enumerate(replicas):
            if n:
                await reset_day(admin, t0)
            for again in range(args.ticks if n == 0 else 1):
                if again:
                    await reset_day(admin, t0)
                # The set-up's bulk load leaves gigabytes for the checkpointer: measured mid-flush,
                # a tick would time the disk's write-back, not the planner.
                await admin.execute("CHECKPOINT")
                tick = await plan_tick(engine, admin, timer, t0, profile=n > 0)
                results["plan_ticks"].append(tick)
                log(
                    f"planning tick: {tick['plan_s']:.3f} s, {tick['jobs_created']} jobs; "
                    f"statistics {tick['statistics_s']:.3f} s"
                )
            if n == 0:
                results["claim_alone"] = await claim_in_isolation(args, engine, timer, proxies)
                log(f"one claim alone: {results['claim_alone']['median_s'] * 1000:.1f} ms")
            while len(servers) < count:
                servers.append(Server(args.port + len(servers), env, args.workdir))
                await servers[-1].ready()
            if count:
                log(f"dispatching with {count} replica(s)")
                d = await dispatch(args, admin, servers[:count], proxies, t0, f"r{count}")
                results["dispatch"].append(d)
                log(
                    f"dispatch: {d['succeeded']}/{d['planned']} in {d['first_claim_to_last_success_s']:.1f} s"
                )
            if n == 0:
                log("RPO report")
                results["rpo"] = await rpo_report(args, servers[0], cat.operator_key, str(cat.tenant_id))
                results["rpo_in_process"] = await rpo_in_process(engine, timer, cat.tenant_id)
                ids = {
                    "operator_key": cat.operator_key,
                    "tenant_id": str(cat.tenant_id),
                    "vm_ids": [str(v) for v in cat.vm_ids[:: max(1, len(cat.vm_ids) // 2000)]],
                    "host_ids": [str(h) for h in cat.host_ids],
                    "policy_ids": [str(p) for p in cat.policy_ids],
                }
                results["idle_latency"] = await idle_latency(servers[0], ids)
        # The reads come last, spread over every replica started for the dispatches.
        results["reads_sweep"] = []
        for rate in [float(r) for r in args.sweep.split(",") if r]:
            log(f"mixed reads at {rate:g}/s for {args.sweep_duration:g} s over {len(servers)} replica(s)")
            results["reads_sweep"].append(
                await mixed_reads(args, servers, ids, rate, args.sweep_duration, profile=False)
            )
        log(f"mixed reads at {args.rate:g}/s for {args.duration:g} s over {len(servers)} replica(s)")
        results["reads"] = await mixed_reads(args, servers, ids, args.rate, args.duration, args.profile)
        results["machine"]["loadavg_end"] = os.getloadavg()
        results["machine"]["cpu_probe_s_end"] = cpu_probe()
        results["table_counts"] = {
            t: await admin.fetchval(f"SELECT count(*) FROM {t}")  # noqa: S608 - fixed table names
            for t in ("vms", "jobs", "restore_points", "rpo_breaches", "rpo_protection_spans")
        }
    finally:
        for server in servers:
            server.stop()
        await admin.close()
        await engine.dispose()
        if not args.keep_db:
            await drop_database(args.db)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--hosts", type=int, default=50)
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--proxies", type=int, default=50)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--skip-history", action="store_true", help="no jobs/points history (quick runs)")
    parser.add_argument("--replicas", default="1,2", help="dispatch runs, by number of serve replicas")
    parser.add_argument("--agent-procs", type=int, default=5, help="processes the proxies are spread over")
    parser.add_argument(
        "--limit-per-host", type=int, default=2, help="VMR_LIMIT_PER_HOST (default: product's)"
    )
    parser.add_argument("--ticks", type=int, default=3, help="planning ticks measured (day reset between)")
    parser.add_argument("--limit-per-datastore", type=int, default=2)
    parser.add_argument("--limit-global", type=int, default=100)
    parser.add_argument("--dispatch-timeout", type=float, default=600.0)
    parser.add_argument("--rpo-requests", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="mixed reads per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of mixed reads")
    parser.add_argument("--sweep", default="25,50,100", help="lower read rates tried first ('' for none)")
    parser.add_argument("--sweep-duration", type=float, default=10.0)
    parser.add_argument("--exclude", default="", help="read kinds to leave out of the mix (name prefixes)")
    parser.add_argument(
        "--profile", action=argparse.BooleanOptionalAction, default=True, help="py-spy servers"
    )
    parser.add_argument("--spy-rate", type=int, default=50)
    parser.add_argument("--port", type=int, default=18480)
    parser.add_argument("--db", default="vmr_bench")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vmr-sched-bench")
    args = parser.parse_args()
    if not args.db.startswith("vmr_bench"):
        parser.error("--db must start with 'vmr_bench' (this benchmark drops and recreates it)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    results = asyncio.run(run(args))
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print()
    print(report(results))
    print(f"\nfull results (profiles, timelines): {args.workdir / 'results.json'}")


if __name__ == "__main__":
    main()
