# ruff: noqa: S608 - SQL built from the benchmark's own constants and integers
"""Benchmark: database dumps into the repository, day after day (dedup by change pattern and CDC size).

    python bench/dumps.py [--rows 6000000] [--workdir /tmp/vmr-dumps-bench] [--avg-sizes 64K,128K,256K,512K]
                          [--engines postgresql,mysql] [--no-fsync]

For each engine it builds an ``orders`` table of ``--rows`` realistic rows (~150 bytes of text, numbers
and timestamps per row, about 1 GiB of database at the default) on the local test server, then:

1. dumps it the way the guest agent does (``pg_dump --format=custom --compress=0``;
   ``mariadb-dump --single-transaction ... --hex-blob``) to a file: the dump's own throughput;
2. changes it twice, dumping after each change:
   (a) "uniform": 1% of the rows updated, chosen uniformly at random;
   (b) "clustered": the most recent 0.5% of the rows updated and 0.5% new rows inserted (what an
       orders table sees in a day);
3. backs the three dumps up, in order, into one fresh repository per CDC average chunk size, and
   reports the bytes the second and third backups stored as a percentage of the first's;
4. times the agent's real path once (``backup_postgres_database`` / ``backup_mysql_database``:
   dump tool -> pipe -> chunk -> dedup -> compress -> encrypt -> store), end to end.

Repositories are encrypted and durable (fsync) unless ``--no-fsync``: what a real backup does. Everything
is written under ``--workdir`` (never the source tree); the benchmark databases are dropped at the end.
Other work on the machine shows in the timings; the dedup figures do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.agent.apps import (  # noqa: E402 - after the path set-up above
    MysqlConnection,
    PostgresConnection,
    backup_mysql_database,
    backup_postgres_database,
)
from app.agent.apps.mysql_backup import dump_options  # noqa: E402
from app.agent.apps.mysql_client import MysqlClient, connection_options  # noqa: E402
from app.agent.apps.postgres_client import Psql, conninfo  # noqa: E402
from app.agent.apps.proc import tool_version  # noqa: E402
from app.chunkstore import FsBackend, Repository, ScryptParams  # noqa: E402
from app.chunkstore.backup import BackupStats  # noqa: E402
from app.chunkstore.cdc import DEFAULT_PARAMS, CdcParams  # noqa: E402
from app.chunkstore.streams import backup_stream  # noqa: E402

MiB = 1 << 20
KiB = 1 << 10
DATABASE = "vmr_dumps_bench"
PASSPHRASE = "bench passphrase"  # noqa: S105 - throwaway benchmark repositories
KDF = ScryptParams(n=2**14, r=8, p=1)
#: Dumped in this order; each later backup is compared with the first. "clustered-again" repeats the
#: clustered change after the uniform one and its VACUUM left free space all over the table.
STATES = ("base", "clustered", "uniform", "clustered-again")
LABELS = {
    "clustered": "clustered 1% (0.5% recent rows updated, 0.5% inserted)",
    "uniform": "uniform 1% (rows updated at random)",
    "clustered-again": "clustered 1%, after the uniform day and its VACUUM",
}


def parse_size(text: str) -> int:
    units = {"K": KiB, "M": MiB, "G": 1 << 30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    result = fn()
    return result, time.monotonic() - start


class Engine(Protocol):
    name: str

    def version(self) -> str: ...
    def create(self, rows: int) -> None: ...
    def size_on_disk(self) -> int: ...
    def uniform_updates(self, percent: float) -> int: ...
    def clustered_changes(self, percent: float) -> int: ...
    def dump_to(self, path: Path) -> None: ...
    def backup_live(self, repo: Repository, point: str) -> BackupStats: ...
    def drop(self) -> None: ...


class Postgres:
    name = "PostgreSQL"

    def __init__(self, conn: PostgresConnection) -> None:
        self.conn = conn
        self.psql = Psql(conn, timeout_s=3600)

    def version(self) -> str:
        return self.psql.server_version()[0]

    def sql(self, text: str) -> str:
        return self.psql.execute("SET synchronous_commit = off;\n" + text, database=DATABASE)

    def create(self, rows: int) -> None:
        self.drop()
        self.psql.execute(f'CREATE DATABASE "{DATABASE}";')
        self.sql(
            "CREATE TABLE orders (id bigint, customer_id integer, status text, amount numeric(12, 2),"
            " currency char(3), created_at timestamptz, updated_at timestamptz, note text);\n"
            "SELECT setseed(0.42);\n" + self._insert(1, rows) + "ALTER TABLE orders ADD PRIMARY KEY (id);\n"
            "CREATE INDEX ON orders (customer_id);\nVACUUM ANALYZE orders;\n"
        )

    @staticmethod
    def _insert(first: int, last: int) -> str:
        return (
            "INSERT INTO orders SELECT i, 1 + (random() * 200000)::int,"
            " (ARRAY['new','paid','packed','shipped','delivered','returned'])[1 + (random() * 5)::int],"
            " round((random() * 500)::numeric, 2), (ARRAY['EUR','USD','GBP'])[1 + (random() * 2)::int],"
            " timestamptz '2024-01-01' + i * interval '4 seconds',"
            " timestamptz '2024-01-01' + i * interval '4 seconds' + (random() * 86400)::int * interval '1 s',"
            " 'Order ' || i || ' for ' || (ARRAY['Alice','Bob','Chen','Dana','Émile','Farah','Gus'])"
            "[1 + (random() * 6)::int] || ': ' || substr(md5(random()::text) || md5(random()::text), 1,"
            f" 20 + (random() * 60)::int) FROM generate_series({first}, {last}) i;\n"
        )

    def size_on_disk(self) -> int:
        return int(self.psql.query_json("SELECT to_json(pg_database_size(:'db'));", db=DATABASE))

    def count(self, where: str = "true") -> int:
        return int(
            self.psql.query_json(f"SELECT to_json(count(*)) FROM orders WHERE {where};", database=DATABASE)
        )

    def uniform_updates(self, percent: float) -> int:
        self.sql(
            "UPDATE orders SET status = 'updated', amount = amount + 1, updated_at = now()"
            f" WHERE random() < {percent / 100};\nVACUUM orders;\n"
        )
        return self.count("status = 'updated'")

    def clustered_changes(self, percent: float) -> int:
        total = self.count()
        half = int(total * percent / 200)
        top = int(self.psql.query_json("SELECT to_json(max(id)) FROM orders;", database=DATABASE))
        self.sql(
            "UPDATE orders SET status = 'shipped', updated_at = now()"
            f" WHERE id > {top - half};\n" + self._insert(top + 1, top + half) + "VACUUM orders;\n"
        )
        return 2 * half

    def dump_to(self, path: Path) -> None:
        args = [self.conn.tool("pg_dump"), "--format=custom", "--compress=0", "--no-password"]
        with path.open("wb") as out:
            subprocess.run(
                [*args, f"--dbname={conninfo(DATABASE)}"], stdout=out, env=self.conn.env(), check=True
            )

    def backup_live(self, repo: Repository, point: str) -> BackupStats:
        writer = repo.begin_restore_point(point, vm_config={})
        result = backup_postgres_database(self.conn, writer, DATABASE)
        writer.commit()
        return result.stats

    def drop(self) -> None:
        self.psql.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE);')


class Mysql:
    name = "MariaDB"
    BATCH = 1_000_000

    def __init__(self, conn: MysqlConnection) -> None:
        self.conn = conn
        self.client = MysqlClient(conn, timeout_s=3600)

    def version(self) -> str:
        return self.client.execute("SELECT VERSION();").strip()

    def sql(self, text: str) -> str:
        return self.client.execute(text, database=DATABASE)

    def create(self, rows: int) -> None:
        self.drop()
        self.client.execute(f"CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4;")
        self.sql(
            "CREATE TABLE orders (id BIGINT PRIMARY KEY, customer_id INT, status VARCHAR(12),"
            " amount DECIMAL(12, 2), currency CHAR(3), created_at DATETIME, updated_at DATETIME,"
            " note VARCHAR(120), KEY (customer_id)) ENGINE=InnoDB;"
        )
        for first in range(1, rows + 1, self.BATCH):
            self.sql(self._insert(first, min(rows, first + self.BATCH - 1)))
        self.sql("ANALYZE TABLE orders;")

    @staticmethod
    def _insert(first: int, last: int) -> str:
        return (
            "INSERT INTO orders SELECT seq, 1 + FLOOR(RAND() * 200000),"
            " ELT(1 + FLOOR(RAND() * 6), 'new', 'paid', 'packed', 'shipped', 'delivered', 'returned'),"
            " ROUND(RAND() * 500, 2), ELT(1 + FLOOR(RAND() * 3), 'EUR', 'USD', 'GBP'),"
            " '2024-01-01' + INTERVAL seq * 4 SECOND,"
            " '2024-01-01' + INTERVAL seq * 4 SECOND + INTERVAL FLOOR(RAND() * 86400) SECOND,"
            " CONCAT('Order ', seq, ' for ', ELT(1 + FLOOR(RAND() * 7), 'Alice', 'Bob', 'Chen', 'Dana',"
            " 'Émile', 'Farah', 'Gus'), ': ',"
            " LEFT(CONCAT(MD5(RAND()), MD5(RAND())), 20 + FLOOR(RAND() * 60)))"
            f" FROM seq_{first}_to_{last};"
        )

    def size_on_disk(self) -> int:
        out = self.client.execute(
            "SELECT DATA_LENGTH + INDEX_LENGTH FROM information_schema.TABLES"
            f" WHERE TABLE_SCHEMA = '{DATABASE}' AND TABLE_NAME = 'orders';"
        )
        return int(out.strip())

    def uniform_updates(self, percent: float) -> int:
        self.sql(
            "UPDATE orders SET status = 'updated', amount = amount + 1, updated_at = NOW()"
            f" WHERE RAND() < {percent / 100};"
        )
        return int(self.sql("SELECT COUNT(*) FROM orders WHERE status = 'updated';").strip())

    def clustered_changes(self, percent: float) -> int:
        total, top = (int(x) for x in self.sql("SELECT COUNT(*), MAX(id) FROM orders;").split())
        half = int(total * percent / 200)
        self.sql(f"UPDATE orders SET status = 'shipped', updated_at = NOW() WHERE id > {top - half};")
        self.sql(self._insert(top + 1, top + half))
        return 2 * half

    def dump_to(self, path: Path) -> None:
        dump = self.conn.dump_tool()
        flags = [
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-create-db",
        ]
        with connection_options(self.conn) as options, path.open("wb") as out:
            args = [dump, *options, *dump_options(tool_version(dump)), *flags, "--", DATABASE]
            subprocess.run(args, stdout=out, check=True)

    def backup_live(self, repo: Repository, point: str) -> BackupStats:
        writer = repo.begin_restore_point(point, vm_config={})
        result = backup_mysql_database(self.conn, writer, DATABASE)
        writer.commit()
        return result.stats

    def drop(self) -> None:
        self.client.execute(f"DROP DATABASE IF EXISTS {DATABASE};")


@dataclass
class Run:
    engine: str
    avg_kib: int
    state: str
    dump_bytes: int
    chunks: int
    chunks_new: int
    bytes_new: int
    bytes_stored: int
    seconds: float


def new_repo(path: Path, durable: bool) -> Repository:
    shutil.rmtree(path, ignore_errors=True)
    return Repository.create(FsBackend(path, durable=durable), passphrase=PASSPHRASE, kdf=KDF)


def backup_file(repo: Repository, point: str, path: Path, params: CdcParams) -> tuple[BackupStats, float]:
    writer = repo.begin_restore_point(point, vm_config={})
    start = time.monotonic()
    with path.open("rb") as f:
        result = backup_stream(repo, writer, "db", f, params=params)
    seconds = time.monotonic() - start
    writer.commit()
    return result.stats, seconds


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def mib(n: float) -> str:
    return f"{n / MiB:,.1f}"


def rate(n: float, seconds: float) -> str:
    return f"{n / MiB / seconds:,.0f}"


def bench_engine(engine: Engine, a: argparse.Namespace, out: list[str], record: dict[str, Any]) -> None:
    work = Path(a.workdir) / engine.name.lower()
    work.mkdir(parents=True, exist_ok=True)

    def log(text: str) -> None:
        print(f"[{engine.name}] {text}", file=sys.stderr, flush=True)

    log(f"creating {a.rows:,} rows")
    _, create_s = timed(lambda: engine.create(a.rows))
    size = engine.size_on_disk()
    dumps: dict[str, Path] = {}
    dump_s: dict[str, float] = {}
    changed: dict[str, int] = {}
    for state in STATES:
        if state == "uniform":
            changed[state] = engine.uniform_updates(1.0)
        elif state.startswith("clustered"):
            changed[state] = engine.clustered_changes(1.0)
        path = dumps[state] = work / f"{state}.dump"
        log(f"dumping the {state} state")
        _, dump_s[state] = timed(lambda path=path: engine.dump_to(path))  # type: ignore[misc]
    live_repo = new_repo(work / "repo-live", not a.no_fsync)
    log("agent path, end to end")
    live, live_s = timed(lambda: engine.backup_live(live_repo, "live"))
    shutil.rmtree(work / "repo-live", ignore_errors=True)

    runs: list[Run] = []
    for avg in a.avg_sizes:
        params = DEFAULT_PARAMS if avg == DEFAULT_PARAMS.avg_size else CdcParams.for_average(avg)
        repo = new_repo(work / f"repo-{avg // KiB}k", not a.no_fsync)
        for state in STATES:
            log(f"backing up {state} at {avg // KiB} KiB")
            s, seconds = backup_file(repo, state, dumps[state], params)
            runs.append(
                Run(
                    engine.name,
                    avg // KiB,
                    state,
                    s.bytes_read,
                    s.chunks_total,
                    s.chunks_new,
                    s.bytes_new,
                    s.bytes_stored,
                    seconds,
                )
            )
        shutil.rmtree(work / f"repo-{avg // KiB}k", ignore_errors=True)

    base_dump = dumps["base"].stat().st_size
    out.append(f"## {engine.name} {engine.version()}\n")
    out.append(
        f"`orders`: {a.rows:,} rows, {size / MiB:,.0f} MiB on disk (table and indexes), created in"
        f" {create_s:.0f} s; dump {base_dump / MiB:,.0f} MiB ({base_dump / a.rows:.0f} bytes per row)."
        f" Rows changed: {changed['clustered']:,} (clustered), {changed['uniform']:,} (uniform),"
        f" {changed['clustered-again']:,} (clustered again).\n"
    )
    out.append(row("Step", "MiB", "Seconds", "MiB/s"))
    out.append(row("---", "---:", "---:", "---:"))
    out.append(
        row("dump to a file", mib(base_dump), f"{dump_s['base']:.1f}", rate(base_dump, dump_s["base"]))
    )
    for r in runs:
        if r.state == "base" and r.avg_kib == DEFAULT_PARAMS.avg_size // KiB:
            what = "backup of that file, 512 KiB chunks (all new)"
            out.append(row(what, mib(r.dump_bytes), f"{r.seconds:.1f}", rate(r.dump_bytes, r.seconds)))
    what = "agent path: dump tool -> repository (all new)"
    out.append(row(what, mib(live.bytes_read), f"{live_s:.1f}", rate(live.bytes_read, live_s)) + "\n")
    out.append(
        row(
            "Change since the previous dump",
            "Avg chunk",
            "Chunks",
            "First backup stored MiB",
            "New MiB (% of dump)",
            "Stored MiB",
            "Stored, % of first",
            "Backup MiB/s",
        )
    )
    out.append(row("---", "---:", "---:", "---:", "---:", "---:", "---:", "---:"))
    for avg in a.avg_sizes:
        mine = {r.state: r for r in runs if r.avg_kib == avg // KiB}
        base = mine["base"]
        for state in STATES[1:]:
            r = mine[state]
            out.append(
                row(
                    LABELS[state],
                    f"{avg // KiB} KiB",
                    f"{r.chunks:,}",
                    mib(base.bytes_stored),
                    f"{mib(r.bytes_new)} ({100 * r.bytes_new / r.dump_bytes:.1f}%)",
                    mib(r.bytes_stored),
                    f"**{100 * r.bytes_stored / base.bytes_stored:.1f}%**",
                    rate(r.dump_bytes, r.seconds),
                )
            )
    out.append("")
    record[engine.name] = {
        "rows": a.rows,
        "size_on_disk": size,
        "changed": changed,
        "dump_seconds": dump_s,
        "dump_bytes": {k: v.stat().st_size for k, v in dumps.items()},
        "live": {"stats": asdict(live), "seconds": live_s},
        "runs": [asdict(r) for r in runs],
    }
    for path in dumps.values():
        path.unlink()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=6_000_000)
    p.add_argument("--workdir", default="/tmp/vmr-dumps-bench")  # noqa: S108 - scratch space, overridable
    p.add_argument("--avg-sizes", default="64K,128K,256K,512K")
    p.add_argument("--engines", default="postgresql,mysql")
    p.add_argument("--no-fsync", action="store_true")
    p.add_argument("--pg-host", default="127.0.0.1")
    p.add_argument("--mysql-host", default="127.0.0.1")
    a = p.parse_args()
    a.avg_sizes = [parse_size(s) for s in a.avg_sizes.split(",")]
    engines: list[Engine] = []
    for name in a.engines.split(","):
        if name == "postgresql":
            engines.append(Postgres(PostgresConnection(host=a.pg_host)))
        elif name == "mysql":
            engines.append(Mysql(MysqlConnection(host=a.mysql_host)))
        else:
            p.error(f"unknown engine {name!r}")
    out = ["# Database dumps into the repository\n"]
    record: dict[str, Any] = {}
    try:
        for engine in engines:
            bench_engine(engine, a, out, record)
    finally:
        for engine in engines:
            engine.drop()
    (Path(a.workdir) / "results.json").write_text(json.dumps(record, indent=2))
    print("\n".join(out))


if __name__ == "__main__":
    main()
