"""Benchmark: inbound ticket webhooks (signed restore requests) against ``vmrecovery serve`` on PostgreSQL.

    python bench/webhooks.py [--vms 500] [--rate 100] [--duration 30] [--replicas 1] [--keep-db]
    python bench/webhooks.py --rate 50 --duration 10 --sweep ""     # quick check

The figure of the ticketing issue: inbound webhook p99 under 50 ms at 100 deliveries/s with
signature checks. What it does (it reports what it reaches and asserts nothing):

1. Creates its own scratch database (``--db``, default ``vmr_bench_webhooks``; refuses any name
   not starting with ``vmr_bench``), runs ``vmrecovery migrate`` and generates a tenant with
   ``--vms`` VMs on ``--hosts`` hosts and ``--days`` days of restore points per VM with COPY
   (``bench/scheduler_seed.py``).
2. Starts ``--replicas`` processes of ``vmrecovery serve --no-embedded-proxy --no-loops`` on the
   database (restore jobs stay queued: the measurement is the webhook's, not the restores'),
   requests spread round-robin as a load balancer would, and creates the tenant's integration
   through ``POST /api/v1/integrations`` (inbound only: no URL).
3. **Idle**: ``--idle`` tickets one at a time (service time without queueing), after three
   reported apart: the process's first, which pay for what it has yet to compile and open.
4. **Open loop**: tickets at ``--rate`` per second for ``--duration`` s, each sent at its scheduled
   instant whatever the previous answers (latency counts from that instant, so a slow server is
   not hidden by a slow sender). Each is signed (Standard Webhooks: HMAC-SHA256 over id,
   timestamp and body) and names a random VM, ``point_in_time`` now and a new-VM target. A share
   ``--retries`` are retries: half replay an earlier message (same ``webhook-id``), half send an
   earlier ticket again under a new message id; both must answer 200 with the first restore.
   ``--sweep`` rates run first, shorter. The sender is a minimal HTTP/1.1 client over kept-alive
   connections: it shares the 2 cores with the servers and PostgreSQL, and httpx would cost it
   several times more CPU per request.
5. Checks the catalog: one restore per distinct ticket, one receipt per accepted message.

Everything runs on this machine against loopback, bounded in time; the server is stopped and the
scratch database dropped at the end unless ``--keep-db``. Results are printed as Markdown and
saved as JSON in ``--workdir``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.crypto import SecretBox  # noqa: E402
from app.integrations.signing import sign  # noqa: E402
from bench.rawhttp import Replicas  # noqa: E402
from bench.scheduler import (  # noqa: E402
    PG,
    SECRET_KEY,
    CpuMeter,
    Server,
    StealSampler,
    drop_database,
    log,
    migrate,
    ms,
    pct,
    recreate_database,
    table,
)
from bench.scheduler_seed import Catalog, seed_history, seed_inventory  # noqa: E402

TICKETS = "/api/v1/webhooks/tickets"


def server_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMR_")}
    env.update(
        VMR_DATABASE_URL=url, VMR_SECRET_KEY=SECRET_KEY, VMR_AUTO_MIGRATE="false", VMR_LOG_LEVEL="warning"
    )
    return env


class Tickets:
    """Ticket bodies and the messages already answered (for retries)."""

    def __init__(self, cat: Catalog, integration: dict[str, Any], seed: int = 11) -> None:
        self.cat = cat
        self.integration = integration
        self.rnd = random.Random(seed)
        self.count = 0
        self.answered: list[tuple[str, bytes]] = []  # (message id, body) of accepted tickets

    def new(self) -> tuple[str, bytes]:
        self.count += 1
        vm_id = self.rnd.choice(self.cat.vm_ids)
        now = datetime.now(UTC).isoformat()
        ticket = {
            "ticket_id": f"BENCH-{self.count:06d}-{uuid.uuid4().hex[:6]}",
            "created_at": now,
            "vm_id": str(vm_id),
            "type": "vm",
            "target": "new",
            "new_vm": {
                "name": f"restore-{self.count}",
                "host_id": str(self.cat.vm_host[vm_id]),
                "datastore_id": str(self.rnd.choice(self.cat.datastore_ids)),
            },
            "point_in_time": now,
        }
        return f"msg_{uuid.uuid4().hex}", json.dumps(ticket).encode()

    def pick(self, retries: float) -> tuple[str, str, bytes]:
        """(kind, message id, body): a new ticket, or a replay/retry of an answered one."""
        if self.answered and self.rnd.random() < retries:
            message_id, body = self.rnd.choice(self.answered)
            if self.rnd.random() < 0.5:
                return "replay", message_id, body
            return "retry", f"msg_{uuid.uuid4().hex}", body
        message_id, body = self.new()
        return "new", message_id, body


def ticket_headers(integration: dict[str, Any], message_id: str, body: bytes) -> dict[str, str]:
    return {
        **sign(integration["secret"], message_id, datetime.now(UTC), body),
        "content-type": "application/json",
    }


async def post_ticket(
    client: httpx.AsyncClient, integration: dict[str, Any], message_id: str, body: bytes
) -> httpx.Response:
    headers = ticket_headers(integration, message_id, body)
    return await client.post(
        TICKETS, params={"integration": integration["id"]}, content=body, headers=headers
    )


async def idle(server: Server, tickets: Tickets, n: int) -> dict[str, Any]:
    latencies: list[float] = []
    first: list[float] = []  # the process's first tickets: what it has yet to compile and open
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        for i in range(n + 3):
            message_id, body = tickets.new()
            started = time.perf_counter()
            response = await post_ticket(client, tickets.integration, message_id, body)
            (latencies if i >= 3 else first).append(time.perf_counter() - started)
            if response.status_code != 202:
                raise RuntimeError(f"idle ticket answered {response.status_code}: {response.text}")
            tickets.answered.append((message_id, body))
    return {
        "n": n,
        "p50_s": pct(latencies, 50),
        "p99_s": pct(latencies, 99),
        "max_s": max(latencies),
        "first_s": first,
    }


async def open_loop(
    args: argparse.Namespace, servers: list[Server], tickets: Tickets, rate: float, duration: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    results: list[dict[str, Any]] = []
    expected = {"new": 202, "replay": 200, "retry": 200}

    target = f"{TICKETS}?integration={tickets.integration['id']}"

    async def one(replica: int, kind: str, message_id: str, body: bytes, due: float) -> None:
        client = replicas.clients[replica]
        sent = loop.time()
        try:
            status, _ = await asyncio.wait_for(
                client.request("POST", target, ticket_headers(tickets.integration, message_id, body), body),
                30,
            )
            error = None
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            status, error = 0, type(exc).__name__
        done = loop.time()
        if status == 202:
            tickets.answered.append((message_id, body))
        results.append(
            {
                "kind": kind,
                "replica": replica,
                "status": status,
                "ok": status == expected[kind],
                "error": error,
                "latency_s": done - due,
                "at_s": due - start,
                "service_s": done - sent,
                "lag_s": sent - due,
            }
        )

    meter = CpuMeter(
        args.db, {"serve": [s.proc.pid for s in servers], "sender (this process)": [os.getpid()]}
    )
    replicas = Replicas([s.url for s in servers])
    machine = StealSampler()
    try:
        meter.start()
        start = loop.time() + 0.05
        machine.start(start)
        tasks = []
        for i in range(int(rate * duration)):
            due = start + i / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, message_id, body = tickets.pick(args.retries)
            replicas.next()
            tasks.append(asyncio.create_task(one(replicas.turn, kind, message_id, body, due)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
        cpu = meter.stop()
    finally:
        seconds = await machine.stop()
        await replicas.close()
    ok = [r for r in results if r["ok"]]
    latencies = [r["latency_s"] for r in ok]
    by_kind = {
        kind: {"n": len(v), "p50_s": pct(v, 50), "p99_s": pct(v, 99)}
        for kind in ("new", "replay", "retry")
        if (v := [r["latency_s"] for r in ok if r["kind"] == kind])
    }
    return {
        "rate": rate,
        "duration_s": duration,
        "sent": len(results),
        "ok": len(ok),
        "unexpected": Counter(f"{r['kind']}: {r['error'] or r['status']}" for r in results if not r["ok"]),
        "achieved_rps": len(results) / elapsed if elapsed else 0.0,
        "p50_s": pct(latencies, 50),
        "p95_s": pct(latencies, 95),
        "p99_s": pct(latencies, 99),
        "max_s": max(latencies, default=float("nan")),
        "service_p99_s": pct([r["service_s"] for r in ok], 99),
        "send_lag_p99_s": pct([r["lag_s"] for r in results], 99),
        "by_kind": by_kind,
        "slow_seconds": _slow_seconds(ok, seconds),
        "machine_seconds": seconds,
        "cpu": cpu,
    }


def _slow_seconds(
    ok: list[dict[str, Any]], machine: list[dict[str, float]], over_s: float = 0.050
) -> list[dict[str, Any]]:
    """The seconds of the run in which an answer took longer than ``over_s``, worst first: a
    tail spread over the run is queueing, one bunched in a second or two is a stall; the
    machine's steal in that second tells whether the host took the CPUs away."""
    steal = {m["second"]: m["steal_pct"] for m in machine}
    slow: dict[int, list[float]] = {}
    lag: dict[int, float] = {}
    replicas: dict[int, Counter[int]] = {}
    for r in ok:
        if r["latency_s"] > over_s:
            sec = int(r["at_s"])
            slow.setdefault(sec, []).append(r["latency_s"])
            lag[sec] = max(lag.get(sec, 0.0), r["lag_s"])
            replicas.setdefault(sec, Counter())[r["replica"]] += 1
    return [
        {
            "second": sec,
            "slow": len(v),
            "max_s": max(v),
            "max_send_lag_s": lag[sec],
            "by_replica": dict(sorted(replicas[sec].items())),
            "steal_pct": steal.get(sec, math.nan),
        }
        for sec, v in sorted(slow.items(), key=lambda kv: -max(kv[1]))
    ]


def _steal_line(machine: list[dict[str, float]]) -> str:
    if not machine:
        return ""
    steals = sorted(m["steal_pct"] for m in machine)
    worst = max(machine, key=lambda m: m["steal_pct"])
    return (
        f" CPU steal per second over the run: median {steals[len(steals) // 2]:.0f}%, "
        f"max {worst['steal_pct']:.0f}% (second {worst['second']})."
    )


def report(results: dict[str, Any]) -> str:
    parts = []
    machine = results["machine"]
    parts.append(
        f"{results['args']['replicas']} serve replica(s); {machine['cpus']} cores; "
        f"load average at start {machine['loadavg_start'][0]:.2f}, "
        f"at end {machine['loadavg_end'][0]:.2f}; {results['setup']['vms']} VMs, "
        f"{results['setup']['history']['restore_points']} restore points."
    )
    i = results["idle"]
    parts.append(
        table(
            ["idle (one at a time)", "n", "p50 ms", "p99 ms", "max ms", "first 3 after start, ms"],
            [
                [
                    "ticket",
                    i["n"],
                    ms(i["p50_s"]),
                    ms(i["p99_s"]),
                    ms(i["max_s"]),
                    ", ".join(ms(s) for s in i["first_s"]),
                ]
            ],
        )
    )
    rows = []
    for run in results["runs"]:
        cpu = run["cpu"]
        rows.append(
            [
                f"{run['rate']:g}/s x {run['duration_s']:g} s",
                f"{run['ok']}/{run['sent']}",
                f"{run['achieved_rps']:.1f}",
                f"{run['cpu']['serve'] / max(run['sent'], 1) * 1000:.1f}",
                ms(run["p50_s"]),
                ms(run["p95_s"]),
                ms(run["p99_s"]),
                ms(run["max_s"]),
                ms(run["send_lag_p99_s"]),
                " / ".join(f"{cpu[k]:.1f}" for k in ("serve", "sender (this process)", "machine busy"))
                + f" of {cpu['wall_s'] * (os.cpu_count() or 1):.0f}",
                ", ".join(f"{k} x{v}" for k, v in run["unexpected"].items()) or "none",
            ]
        )
    parts.append(
        table(
            [
                "open loop",
                "as expected",
                "req/s",
                "serve CPU ms/request",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "send lag p99 ms",
                "CPU s: serve / sender / whole machine",
                "unexpected answers",
            ],
            rows,
        )
    )
    last = results["runs"][-1]
    parts.append(
        table(
            ["headline run, by kind", "n", "p50 ms", "p99 ms"],
            [[k, v["n"], ms(v["p50_s"]), ms(v["p99_s"])] for k, v in last["by_kind"].items()],
        )
    )
    slow = last.get("slow_seconds", [])
    replicas = int(results["args"]["replicas"])
    parts.append(
        f"Headline run: answers over 50 ms fell in {len(slow)} of its {last['duration_s']:g} seconds"
        + (
            "; worst: "
            + ", ".join(
                f"second {s['second']} ({s['slow']} slow, max {ms(s['max_s'])} ms, "
                f"sent up to {ms(s['max_send_lag_s'])} ms late, CPU steal {s['steal_pct']:.0f}%"
                + (
                    ", by replica " + "/".join(str(s["by_replica"].get(n, 0)) for n in range(replicas))
                    if replicas > 1
                    else ""
                )
                + ")"
                for s in slow[:5]
            )
            if slow
            else ""
        )
        + "."
        + _steal_line(last.get("machine_seconds", []))
    )
    check = results["catalog"]
    parts.append(
        f"Catalog after the runs: {check['restores']} restores for {check['distinct_tickets']} distinct "
        f"tickets accepted, {check['receipts']} receipts, {check['restores_without_ticket']} restores "
        "without a ticket id."
    )
    return "\n\n".join(parts)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if not args.db.startswith("vmr_bench"):
        raise SystemExit("--db must start with 'vmr_bench' (the database is dropped)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{args.db}"
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "loadavg_start": os.getloadavg()},
        "runs": [],
    }
    log(f"creating database {args.db} and migrating")
    await recreate_database(args.db)
    env = server_env(url)
    migrate(env, args.workdir)
    admin = await asyncpg.connect(database=args.db, **PG)
    servers: list[Server] = []
    try:
        t0 = datetime.now(UTC)
        cat = await seed_inventory(
            admin, SecretBox(SECRET_KEY), vms=args.vms, hosts=args.hosts, policies=2, t0=t0
        )
        history = await seed_history(admin, cat, args.days)
        await admin.execute("VACUUM (ANALYZE)")
        results["setup"] = {"vms": args.vms, "history": history}
        log(f"seeded {args.vms} VMs, {history['restore_points']} restore points; starting serve")
        for n in range(args.replicas):
            servers.append(Server(args.port + n, env, args.workdir))
        for server in servers:
            await server.ready()
        server = servers[0]
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {cat.operator_key}"}
        ) as client:
            response = await client.post(
                "/api/v1/integrations", json={"name": "bench desk", "tenant_id": str(cat.tenant_id)}
            )
            response.raise_for_status()
            integration = response.json()
        tickets = Tickets(cat, integration)
        results["idle"] = await idle(server, tickets, args.idle)
        log(f"idle: p50 {ms(results['idle']['p50_s'])} ms")
        for rate in [float(r) for r in args.sweep.split(",") if r]:
            log(f"open loop at {rate:g}/s for {args.sweep_duration:g} s")
            results["runs"].append(await open_loop(args, servers, tickets, rate, args.sweep_duration))
        log(f"open loop at {args.rate:g}/s for {args.duration:g} s")
        run_ = await open_loop(args, servers, tickets, args.rate, args.duration)
        results["runs"].append(run_)
        log(
            f"p50 {ms(run_['p50_s'])} ms, p99 {ms(run_['p99_s'])} ms, {run_['ok']}/{run_['sent']} as expected"
        )
        results["machine"]["loadavg_end"] = os.getloadavg()
        results["catalog"] = {
            "restores": await admin.fetchval("SELECT count(*) FROM restores"),
            "distinct_tickets": len({body for _, body in tickets.answered}),
            "receipts": await admin.fetchval("SELECT count(*) FROM webhook_receipts"),
            "restores_without_ticket": await admin.fetchval(
                "SELECT count(*) FROM restores WHERE ticket_id IS NULL"
            ),
        }
    finally:
        for server in servers:
            server.stop()
        await admin.close()
        if not args.keep_db:
            await drop_database(args.db)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--days", type=int, default=7, help="days of restore points per VM")
    parser.add_argument("--rate", type=float, default=100.0, help="tickets per second (headline run)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of the headline run")
    parser.add_argument("--sweep", default="50", help="lower rates tried first ('' for none)")
    parser.add_argument("--sweep-duration", type=float, default=10.0)
    parser.add_argument("--retries", type=float, default=0.1, help="share of replays and retried tickets")
    parser.add_argument("--idle", type=int, default=30, help="tickets sent one at a time first")
    parser.add_argument(
        "--replicas", type=int, default=1, help="serve processes on one database, requests round-robin"
    )
    parser.add_argument("--port", type=int, default=18580)
    parser.add_argument("--db", default="vmr_bench_webhooks")
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vmr-webhooks-bench")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    (args.workdir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(report(results))


if __name__ == "__main__":
    main()
