"""Application backups and restores end to end: real serve, proxy and guest agent processes, the real
PostgreSQL and MariaDB servers of the machine, and vcsim for the VM the agent belongs to.

The guest agent runs on this machine standing in for "inside the VM": it reaches the databases
through 127.0.0.1 as an agent inside a database VM would reach its local server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.agent.apps import mysql_restore, postgres_restore
from app.agent.apps.mysql_client import MysqlClient, ident
from app.agent.apps.postgres_client import Psql
from tests.agent.apps.conftest import MY, PG, my_databases, pg_databases
from tests.agent.apps.test_mysql import contents as my_contents
from tests.agent.apps.test_mysql import make_database as make_my_database
from tests.agent.apps.test_postgres import contents as pg_contents
from tests.agent.apps.test_postgres import make_database as make_pg_database
from tests.e2e.stack import Stack
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp.disks import fill_disk

pytestmark = pytest.mark.vcsim

VM = "DC0_H0_VM0"
#: Names of the databases a restore works in before it puts the result in place.
STAGING = tuple(
    {
        postgres_restore.STAGING_PREFIX,
        postgres_restore.OLD_PREFIX,
        mysql_restore.STAGING_PREFIX,
        mysql_restore.OLD_PREFIX,
    }
)


class GuestStack(Stack):
    """The deployment plus one guest agent process for ``VM``."""

    guest: subprocess.Popen[bytes] | None = None

    def start_guest(self, config: str) -> dict[str, Any]:
        agent = self.post("/guest-agents", {"vm_id": self.vm(VM)["id"]}, expect=201)
        (self.workdir / "guest.token").write_text(agent["token"])
        (self.workdir / "guest.toml").write_text(config)
        self.guest = self._spawn(
            [
                "guest-agent",
                "--server",
                self.base,
                "--token-file",
                str(self.workdir / "guest.token"),
                "--config",
                str(self.workdir / "guest.toml"),
            ],
            "guest.log",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            shown = self.get(f"/guest-agents/{agent['id']}")
            if shown["status"] == "online" and shown["applications"]:
                return shown  # type: ignore[no-any-return]
            assert self.guest.poll() is None, self.log("guest.log")
            time.sleep(0.2)
        raise AssertionError(f"the guest agent did not come online: {self.log('guest.log')}")

    def stop(self) -> None:
        if self.guest is not None and self.guest.poll() is None:
            self.guest.send_signal(signal.SIGTERM)
            try:
                self.guest.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.guest.kill()
        super().stop()


@pytest.fixture
def stack(tmp_path: Path, vcsim_factory: VcsimFactory) -> Iterator[GuestStack]:
    deployment = GuestStack(tmp_path, vcsim_factory(), VMR_GUEST_FREEZE_TIMEOUT_S="8")
    try:
        yield deployment.start()  # type: ignore[misc]
    finally:
        deployment.stop()


@pytest.fixture
def databases(prefix: str) -> Iterator[tuple[str, str]]:
    """A PostgreSQL and a MariaDB database with rows, views, routines and triggers (the agent tests'
    schemas), dropped afterwards with anything a restore left behind."""
    psql, client = Psql(PG), MysqlClient(MY)
    pg_before, my_before = pg_databases(psql, *STAGING), my_databases(client, *STAGING)
    pg_name, my_name = f"{prefix}_sales", f"{prefix}_shop"
    make_pg_database(PG, pg_name, prefix)
    make_my_database(client, my_name)
    try:
        yield pg_name, my_name
    finally:
        for name in pg_databases(psql, prefix) | (pg_databases(psql, *STAGING) - pg_before):
            psql.execute('DROP DATABASE IF EXISTS :"db" WITH (FORCE);', db=name)
        for role in psql.query_json(
            "SELECT coalesce(json_agg(rolname), '[]'::json) FROM pg_roles WHERE starts_with(rolname, :'p');",
            p=prefix,
        ):
            psql.execute('DROP ROLE IF EXISTS :"r";', r=role)
        for name in my_databases(client, prefix) | (my_databases(client, *STAGING) - my_before):
            client.execute(f"DROP DATABASE IF EXISTS {ident(name)};")


@pytest.fixture
def prefix() -> str:
    return f"vmr_t_{os.urandom(4).hex()}"


def make_files(root: Path) -> dict[str, bytes]:
    files = {
        "etc/app.conf": b"listen = 8080\n",
        "etc/nested/deep/secret.key": os.urandom(3000),
        "srv/www/index.html": "<h1>Grüße</h1>\n".encode(),
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return files


def test_databases_and_files_backed_up_by_the_guest_agent_and_restored(
    stack: GuestStack, databases: tuple[str, str]
) -> None:
    pg_name, my_name = databases
    source = stack.workdir / "guest-files"
    files = make_files(source)
    policy = stack.post(
        "/policies",
        {
            "tenant_id": stack.tenant_id,
            "name": "db-vm",
            "selection": {"vm_ids": [stack.vm(VM)["id"]]},
            "application_aware": True,
            "applications": {
                "items": [
                    {"type": "postgresql", "databases": [pg_name]},
                    {"type": "mysql", "databases": [my_name]},
                    {"type": "files", "paths": [str(source)]},
                ]
            },
        },
    )
    shown = stack.start_guest(
        "[postgresql.default]\n"
        'host = "127.0.0.1"\nport = 5432\nuser = "postgres"\nmaintenance_db = "test"\n\n'
        "[mysql.default]\n"
        'host = "127.0.0.1"\nport = 3306\nuser = "root"\n\n'
        "[restore]\n"
        f'allowed_roots = ["{stack.workdir}"]\n'
    )
    engines = {a["engine"]: a for a in shown["applications"]}
    assert pg_name in engines["postgresql"]["databases"] and my_name in engines["mysql"]["databases"]
    pg_before, my_before = pg_contents(PG, pg_name), my_contents(MysqlClient(MY), my_name)

    # An application backup, started by hand (the policy's schedule would do the same).
    (job,) = stack.post("/jobs", {"vm_ids": [stack.vm(VM)["id"]], "kind": "app_backup"})
    done = stack.wait_job(job["id"], timeout_s=180)
    assert done["state"] == "succeeded", (done, stack.log("guest.log"))
    point = stack.get(f"/restore-points/{done['result']['restore_point_id']}")
    assert point["kind"] == "application" and point["consistency"] == "application"
    assert point["policy_id"] == policy["id"] and point["disks"] == []
    streams = {s["name"]: s for s in point["streams"]}
    assert set(streams) == {
        f"postgresql/{pg_name}",
        f"mysql/{my_name}",
        "files/" + str(source).strip("/").replace("/", "-"),
    }
    assert all(s["size"] > 0 for s in streams.values())
    # The VM's RPO counts image points only: a dump restores a database, not the VM. (Still
    # within its first RPO since the policy began: compliant.)
    rpo = stack.get("/compliance/rpo", vm_id=stack.vm(VM)["id"])["items"][0]
    assert rpo["status"] == "compliant" and rpo["latest_restore_point_at"] is None, rpo

    # Disaster: the PostgreSQL database is dropped, the MariaDB one changed, files deleted.
    Psql(PG).execute('DROP DATABASE :"db" WITH (FORCE);', db=pg_name)
    MysqlClient(MY).execute(f"DELETE FROM {ident(my_name)}.orders;")  # noqa: S608 - a quoted identifier
    for name in files:
        (source / name).unlink()

    def restore(body: dict[str, Any]) -> dict[str, Any]:
        requested = stack.post("/restores", {"restore_point_id": point["id"], "type": "application", **body})
        assert requested["state"] == "requested" and requested["type"] == "application"
        ended = stack.wait_restore(requested["id"], timeout_s=180)
        assert ended["state"] == "succeeded", (ended, stack.log("guest.log"))
        assert ended["initiated_at"] is not None and ended["completed_at"] is not None
        return ended

    restore({"stream": f"postgresql/{pg_name}"})
    assert pg_contents(PG, pg_name) == pg_before
    # Under a new name it sits beside the original; over another existing database only when asked.
    restored = restore({"stream": f"mysql/{my_name}", "target_database": f"{my_name}_copy"})
    assert restored["result"]["database"] == f"{my_name}_copy"
    copy = my_contents(MysqlClient(MY), f"{my_name}_copy")["text"]
    assert copy == my_before["text"].replace(my_name, f"{my_name}_copy")
    again = stack.post(
        "/restores",
        {
            "restore_point_id": point["id"],
            "type": "application",
            "stream": f"mysql/{my_name}",
            "target_database": f"{my_name}_copy",
        },
    )
    ended = stack.wait_restore(again["id"], timeout_s=180)
    assert ended["state"] == "failed" and "exists" in ended["error"], ended
    # Restoring under its own name is rolling it back: the changed database is replaced.
    restore({"stream": f"mysql/{my_name}"})
    assert my_contents(MysqlClient(MY), my_name) == my_before

    target = stack.workdir / "restored-files"
    restore({"stream": next(n for n in streams if n.startswith("files/")), "target_directory": str(target)})
    for name, data in files.items():
        matches = list(target.rglob(Path(name).name))
        assert len(matches) == 1 and matches[0].read_bytes() == data, name

    # A target outside what the agent allows is refused by the agent, and nothing is written.
    outside = stack.post(
        "/restores",
        {
            "restore_point_id": point["id"],
            "type": "application",
            "stream": next(n for n in streams if n.startswith("files/")),
            "target_directory": str(stack.workdir.parent / "not-allowed"),
        },
    )
    ended = stack.wait_restore(outside["id"], timeout_s=60)
    assert ended["state"] == "failed" and "allowed_roots" in ended["error"]
    assert not (stack.workdir.parent / "not-allowed").exists()


def test_application_aware_image_backup_freezes_the_databases_for_the_snapshot(
    stack: GuestStack, databases: tuple[str, str]
) -> None:
    stack.post(
        "/policies",
        {
            "tenant_id": stack.tenant_id,
            "name": "aware",
            "selection": {"vm_ids": [stack.vm(VM)["id"]]},
            "application_aware": True,
        },
    )
    stack.start_guest(
        '[postgresql.default]\nhost = "127.0.0.1"\nuser = "postgres"\nmaintenance_db = "test"\n\n'
        '[mysql.default]\nhost = "127.0.0.1"\nuser = "root"\n'
    )
    fill_disk(stack.vcsim, VM, 8 * 1024 * 1024, seed=1, kind="ext4")
    job = stack.wait_job(stack.backup(VM)["id"], timeout_s=180)
    assert job["state"] == "succeeded", f"{job['error']}\n{stack.log('proxy.log')[-3000:]}"
    point = stack.get(f"/restore-points/{job['result']['restore_point_id']}")
    assert point["kind"] == "image" and point["consistency"] == "application", (
        point["warnings"],
        stack.log("guest.log")[-3000:],
    )
    (quiesce,) = stack.get("/jobs", kind="quiesce")["items"]
    assert quiesce["state"] == "succeeded", quiesce
    assert quiesce["result"]["held_until_release"] is True
    assert set(quiesce["result"]["engines"]) == {"postgresql", "mysql"}
    assert stack.snapshots_of(VM) == []

    # Without the guest agent the proxy does not wait for ever: crash-consistent, and it says why.
    assert stack.guest is not None
    stack.guest.send_signal(signal.SIGKILL)
    stack.guest.wait(timeout=10)
    job = stack.wait_job(stack.backup(VM)["id"], timeout_s=240)
    assert job["state"] == "succeeded", job
    point = stack.get(f"/restore-points/{job['result']['restore_point_id']}")
    assert point["consistency"] == "crash"
    assert any("guest agent did not freeze" in w for w in point["warnings"]), point["warnings"]
