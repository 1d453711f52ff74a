"""Load generators for ``bench/scheduler.py``, each run as its own process.

``agents``: light proxy agents. Each proxy heartbeats, long-polls ``POST /agent/jobs/claim``
with its capacity (as ``app.agent.worker`` does) and completes every job it gets at once as
``succeeded`` with a fabricated ``BackupResult`` for the assigned restore point, naming the
attempt as the real agent does. They send through ``bench.rawhttp``, not the agent's httpx client. No vCenter,
snapshot or repository is involved: it stands in for real data movement, so what is measured
is the control plane's dispatch path (claim, lease, complete, restore point recording).

``reads``: an open-loop generator of mixed read requests at a fixed rate. Request *i* is sent at
``start + i / rate`` whether or not earlier ones have answered, so a slow server shows up as
latency instead of a lower request rate (no coordinated omission). Latency is measured from the
scheduled instant; the send lag of the generator itself is reported too. It sends through
``bench.rawhttp`` (a minimal HTTP/1.1 client): httpx cost as much CPU per request as the server
once the server fell behind.

Both are bounded in time and count and only talk to the loopback servers they are given.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.contracts.agent import BackupResult, CompleteRequest, DiskResult, ProgressReport
from bench.rawhttp import RawClient, Replicas

DISK_SIZE = 40 << 30


# -- agents ---------------------------------------------------------------------------------------


class ProxyStats:
    def __init__(self) -> None:
        self.claims = 0
        self.empty_claims = 0
        self.jobs = 0
        self.errors: list[str] = []
        self.claim_s: list[float] = []
        self.complete_s: list[float] = []
        self.first_claim_at: float | None = None
        self.last_complete_at: float | None = None


def _result_template() -> dict[str, Any]:
    """A successful backup's completion, built once through the agent contract's models (so the
    body is one the real agent could send) and then filled in per job as plain JSON."""
    new = 1_000_000_000
    disk = DiskResult(
        key=2000,
        label="Hard disk 1",
        size=DISK_SIZE,
        change_id="52 de ad be ef/bench",
        bytes_read=new,
        bytes_new=new // 2,
        bytes_stored=new // 4,
        chunks=1000,
        chunks_new=500,
        used_cbt=True,
    )
    request = CompleteRequest(
        outcome="succeeded",
        backup=BackupResult(
            restore_point_id=uuid.uuid4(),
            created_at=datetime.now(UTC),
            consistency="crash",
            disks=[disk],
        ),
        progress=ProgressReport(
            phase="done", bytes_total=DISK_SIZE, bytes_read=new, bytes_new=new // 2, bytes_stored=new // 4
        ),
    )
    return request.model_dump(mode="json")


RESULT = _result_template()


class ChannelError(Exception):
    """The server refused or failed a request of the agents' channel."""


class LightAgent:
    """One proxy's side of the agents' channel (``/api/v1/agent``) over ``bench.rawhttp``.

    The same requests as ``app.agent.client.AgentClient``, without its per-request cost: httpx and
    pydantic cost the load generator 6-7 ms of CPU per dispatched job on the two cores the server
    and PostgreSQL also use, which a real deployment's agents spend on their own hosts."""

    def __init__(self, server: str, token: str) -> None:
        self.http = RawClient(server)
        self.headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}

    async def _post(self, path: str, body: dict[str, Any]) -> bytes:
        status, payload = await self.http.request(
            "POST", f"/api/v1/agent{path}", self.headers, json.dumps(body).encode()
        )
        if status >= 300:
            raise ChannelError(f"POST {path}: {status} {payload[:200]!r}")
        return payload

    async def heartbeat(self, hostname: str) -> None:
        await self._post("/heartbeat", {"agent_version": "bench", "hostname": hostname, "running_jobs": 0})

    async def claim(self, capacity: int, wait_s: float) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = json.loads(
            await self._post("/jobs/claim", {"capacity": capacity, "wait_s": wait_s})
        )["jobs"]
        return jobs

    async def complete(self, job: dict[str, Any]) -> None:
        body = {
            **RESULT,
            "backup": {
                **RESULT["backup"],
                "restore_point_id": job["backup"]["restore_point_id"],
                "created_at": datetime.now(UTC).isoformat(),
            },
        }
        await self._post(f"/jobs/{job['job_id']}/complete?attempt={job['attempt']}", body)

    async def close(self) -> None:
        await self.http.close()


async def _complete(client: LightAgent, job: dict[str, Any], stats: ProxyStats) -> None:
    started = time.perf_counter()
    try:
        await client.complete(job)
    except (ChannelError, OSError) as exc:
        stats.errors.append(f"complete: {exc}"[:300])
        return
    stats.complete_s.append(time.perf_counter() - started)
    stats.jobs += 1
    stats.last_complete_at = time.time()


async def _heartbeats(client: LightAgent, name: str, stop: asyncio.Event, stats: ProxyStats) -> None:
    while not stop.is_set():
        try:
            await client.heartbeat(name)
        except (ChannelError, OSError) as exc:
            stats.errors.append(f"heartbeat: {exc}"[:300])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=15)


async def run_proxy(proxy: dict[str, Any], capacity: int, wait_s: float, stop: asyncio.Event) -> ProxyStats:
    stats = ProxyStats()
    client = LightAgent(proxy["server"], proxy["token"])
    # Heartbeats on a connection of their own, as the real agent's separate task has.
    beating = LightAgent(proxy["server"], proxy["token"])
    beats = asyncio.create_task(_heartbeats(beating, proxy["name"], stop, stats))
    try:
        while not stop.is_set():
            started = time.perf_counter()
            try:
                jobs = await client.claim(capacity, wait_s)
            except (ChannelError, OSError) as exc:
                stats.errors.append(f"claim: {exc}"[:300])
                await asyncio.sleep(0.5)
                continue
            stats.claim_s.append(time.perf_counter() - started)
            stats.claims += 1
            if not jobs:
                stats.empty_claims += 1
                continue
            if stats.first_claim_at is None:
                stats.first_claim_at = time.time()
            await asyncio.gather(*(_complete(client, job, stats) for job in jobs))
    except asyncio.CancelledError:
        pass
    finally:
        stop.set()
        beats.cancel()
        await asyncio.gather(beats, return_exceptions=True)
        await client.close()
        await beating.close()
    return stats


async def agents_main(proxies: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(run_proxy(p, args.capacity, args.wait_s, stop)) for p in proxies]
    loop = asyncio.get_running_loop()

    def on_term() -> None:
        stop.set()
        for task in tasks:
            task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_term)
    loop.call_later(args.max_seconds, on_term)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    out = []
    for proxy, stats in zip(proxies, results, strict=True):
        if isinstance(stats, BaseException):
            out.append({"name": proxy["name"], "crashed": repr(stats)})
            continue
        out.append({"name": proxy["name"], **vars(stats)})
    return out


# -- open-loop reads ------------------------------------------------------------------------------

MIX: list[tuple[str, int]] = [
    ("vms page (tenant, protected, policy, offset)", 20),
    ("vms filtered (host / name / folder)", 10),
    ("vm by id", 15),
    ("hosts", 8),
    ("datastores", 7),
    ("policies", 5),
    ("jobs page (tenant)", 7),
    ("jobs of a VM", 5),
    ("restore points of a VM", 15),
    ("proxies", 5),
]


def request_for(kind: str, rnd: random.Random, ids: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    tenant = ids["tenant_id"]
    vm = rnd.choice(ids["vm_ids"])
    if kind.startswith("vms page"):
        offset = rnd.randrange(0, 10) * 50
        params = {
            "tenant_id": tenant,
            "protection_status": "protected",
            "policy_id": rnd.choice(ids["policy_ids"]),
        }
        return "/vms", {**params, "limit": 50, "offset": offset}
    if kind.startswith("vms filtered"):
        choice = rnd.randrange(3)
        if choice == 0:
            return "/vms", {"host_id": rnd.choice(ids["host_ids"]), "limit": 50}
        if choice == 1:
            return "/vms", {"q": f"vm-0{rnd.randrange(10)}{rnd.randrange(10)}", "limit": 50}
        return "/vms", {"folder": f"/DC0/vm/policy-{rnd.randrange(len(ids['policy_ids'])):02d}", "limit": 50}
    if kind == "vm by id":
        return f"/vms/{vm}", {}
    if kind == "hosts":
        return "/hosts", {"limit": 50, "offset": rnd.choice((0, 0, 50))}
    if kind == "datastores":
        return "/datastores", {"limit": 100}
    if kind == "policies":
        return "/policies", {"tenant_id": tenant}
    if kind.startswith("jobs page"):
        return "/jobs", {"tenant_id": tenant, "limit": 50}
    if kind == "jobs of a VM":
        return "/jobs", {"vm_id": vm, "limit": 20}
    if kind == "restore points of a VM":
        return "/restore-points", {"vm_id": vm, "limit": 50}
    if kind == "restore points page (tenant)":
        return "/restore-points", {"tenant_id": tenant, "limit": 50}
    return "/proxies", {"limit": 50}


async def reads_main(ids: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rnd = random.Random(args.seed)
    mix = [(k, w) for k, w in MIX if not any(k.startswith(x) for x in args.exclude.split(",") if x)]
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    total = min(args.max_requests, int(args.rate * args.duration))
    kinds_of = [rnd.choices(kinds, weights)[0] for _ in range(total)]
    plan = [request_for(k, rnd, ids) for k in kinds_of]
    results: list[dict[str, Any]] = []
    # Round-robin over the replicas, as a load balancer in front of them would.
    replicas = Replicas(args.server.split(","), max_connections=args.connections)
    headers = {"authorization": f"Bearer {ids['operator_key']}"}
    targets = [f"/api/v1{path}?{urlencode(params)}" if params else f"/api/v1{path}" for path, params in plan]
    try:
        # Warm the connections and the server's caches; not measured.
        for target in targets[: min(20, total)]:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError, TimeoutError):
                await asyncio.wait_for(replicas.next().request("GET", target, headers), args.timeout)

        async def one(i: int, due: float, client: RawClient) -> None:
            sent = time.perf_counter()
            status = 0
            error = None
            try:
                status, _ = await asyncio.wait_for(client.request("GET", targets[i], headers), args.timeout)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                error = type(exc).__name__
            done = time.perf_counter()
            results.append(
                {"kind": kinds_of[i], "status": status, "error": error, "latency_s": done - due,
                 "service_s": done - sent, "lag_s": sent - due}
            )  # fmt: skip

        start = time.perf_counter() + 0.2
        tasks = []
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due, replicas.next())))
        await asyncio.wait(tasks, timeout=args.timeout + 5)
        elapsed = time.perf_counter() - start
    finally:
        await replicas.close()
    return {"sent": total, "elapsed_s": elapsed, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    agents = sub.add_parser("agents", help="run light proxy agents")
    agents.add_argument("--proxies", required=True, help="JSON file: [{name, token, server}]")
    agents.add_argument("--first", type=int, default=0)
    agents.add_argument("--count", type=int, default=10)
    agents.add_argument("--capacity", type=int, default=2)
    agents.add_argument("--wait-s", type=float, default=20.0)
    agents.add_argument("--max-seconds", type=float, default=900.0)
    agents.add_argument("--out", required=True)
    reads = sub.add_parser("reads", help="open-loop mixed reads")
    reads.add_argument("--server", required=True, help="the replicas' URLs, comma-separated")
    reads.add_argument("--ids", required=True, help="JSON file: operator_key, tenant_id, vm_ids, ...")
    reads.add_argument("--rate", type=float, default=200.0)
    reads.add_argument("--duration", type=float, default=30.0)
    reads.add_argument("--max-requests", type=int, default=20_000)
    reads.add_argument("--connections", type=int, default=100)
    reads.add_argument("--timeout", type=float, default=10.0)
    reads.add_argument("--seed", type=int, default=1)
    reads.add_argument("--exclude", default="", help="leave out kinds starting with these (comma-separated)")
    reads.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.command == "agents":
        proxies = json.loads(Path(args.proxies).read_text())[args.first : args.first + args.count]
        out: Any = asyncio.run(agents_main(proxies, args))
    else:
        out = asyncio.run(reads_main(json.loads(Path(args.ids).read_text()), args))
    Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
