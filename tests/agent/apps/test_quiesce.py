"""Freeze/thaw around a snapshot: MariaDB's read lock, PostgreSQL's checkpoint, the user's scripts.

Ordering is asserted with threads, events and the server's own process list, with generous timeouts
that only bound a hang; nothing depends on how long anything takes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from app.agent.apps import (
    HookScripts,
    MysqlConnection,
    MysqlReadLock,
    PostgresCheckpoint,
    PostgresConnection,
    Quiesce,
    QuiesceError,
)
from app.agent.apps.mysql_client import MysqlClient, ident

PATIENCE_S = 60.0


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def blocked_writers(client: MysqlClient, marker: str) -> int:
    out = client.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST"  # noqa: S608
        f" WHERE INFO LIKE '%{marker}%' AND STATE LIKE 'Waiting for %lock%' AND ID <> CONNECTION_ID();"
    )
    return int(out.strip())


def session_alive(client: MysqlClient, connection_id: int) -> bool:
    query = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = %d;"
    out = client.execute(query % connection_id)
    return int(out.strip()) == 1


@pytest.fixture
def table(my: MysqlConnection, my_scope: str) -> str:
    client = MysqlClient(my)
    name = f"{my_scope}_q"
    client.execute(f"CREATE DATABASE {ident(name)}; CREATE TABLE {ident(name)}.t (x VARCHAR(50));")
    return f"{ident(name)}.t"


def test_a_write_waits_while_mariadb_is_frozen(my: MysqlConnection, table: str, prefix: str) -> None:
    client = MysqlClient(my)
    marker = f"written-while-frozen-{prefix}"  # this run's write, whatever else runs on the server
    lock = MysqlReadLock(my, hold_timeout_s=120)
    lock.freeze()
    done = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            client.execute(f"INSERT INTO {table} VALUES ('{marker}');")  # noqa: S608
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    try:
        writer.start()
        wait_until(lambda: blocked_writers(client, marker) == 1, "the write to block")
        assert not done.is_set(), "the write went through while frozen"
    finally:
        lock.thaw()
    assert done.wait(PATIENCE_S), "the write did not go through after thaw"
    writer.join()
    assert not errors
    assert marker in client.execute(f"SELECT x FROM {table};")  # noqa: S608


def test_a_lost_thaw_cannot_block_mariadb_forever(my: MysqlConnection, table: str) -> None:
    """The server ends the locking session after hold_timeout_s by itself; thaw then says the
    snapshot may not be consistent."""
    client = MysqlClient(my)
    lock = MysqlReadLock(my, hold_timeout_s=1)
    lock.freeze()
    assert lock.connection_id is not None
    connection_id = lock.connection_id
    wait_until(lambda: not session_alive(client, connection_id), "the server to end the locking session")
    client.execute(f"INSERT INTO {table} VALUES ('after the hold timeout');")  # noqa: S608
    with pytest.raises(QuiesceError, match="crash-consistent"):
        lock.thaw()


def test_postgres_checkpoint(pg: PostgresConnection) -> None:
    step = PostgresCheckpoint(pg)
    step.freeze()
    step.thaw()


def _script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


class Recorder:
    def __init__(self, name: str, log: list[str], *, fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    def freeze(self) -> None:
        self.log.append(f"freeze {self.name}")
        if self.fail:
            raise QuiesceError(f"{self.name} cannot freeze")

    def thaw(self) -> None:
        self.log.append(f"thaw {self.name}")


def test_steps_freeze_in_order_and_thaw_in_reverse(tmp_path: Path, my: MysqlConnection, table: str) -> None:
    log_file = tmp_path / "hooks.log"
    pre = _script(tmp_path / "pre", f'echo "pre $VMR_HOOK $1" >> {log_file}\n')
    post = _script(tmp_path / "post", f'echo "post $VMR_HOOK $1" >> {log_file}\n')
    log: list[str] = []
    lock = MysqlReadLock(my)
    with Quiesce([HookScripts(pre, post), Recorder("a", log), lock]):
        assert log_file.read_text() == "pre pre-freeze pre-freeze\n"
        assert log == ["freeze a"]
        assert lock.connection_id is not None
    assert log == ["freeze a", "thaw a"]
    assert log_file.read_text().splitlines() == ["pre pre-freeze pre-freeze", "post post-thaw post-thaw"]


def test_a_failed_freeze_thaws_what_was_frozen(tmp_path: Path) -> None:
    log_file = tmp_path / "hooks.log"
    post = _script(tmp_path / "post", f"echo post >> {log_file}\n")
    log: list[str] = []
    quiesce = Quiesce(
        [HookScripts(None, post), Recorder("a", log), Recorder("b", log, fail=True), Recorder("c", log)]
    )
    with pytest.raises(QuiesceError, match="b cannot freeze"):
        quiesce.freeze()
    assert log == ["freeze a", "freeze b", "thaw b", "thaw a"]
    assert log_file.read_text() == "post\n"
    quiesce.thaw()  # nothing left to thaw


def test_a_failing_pre_freeze_script_reports_its_output_and_still_runs_post_thaw(tmp_path: Path) -> None:
    log_file = tmp_path / "hooks.log"
    pre = _script(tmp_path / "pre", "echo 'cannot flush the cache' >&2\nexit 3\n")
    post = _script(tmp_path / "post", f"echo post >> {log_file}\n")
    with pytest.raises(QuiesceError, match=r"(?s)pre-freeze script .*exit status 3.*cannot flush the cache"):
        Quiesce([HookScripts(pre, post)]).freeze()
    assert log_file.read_text() == "post\n"


def test_a_hanging_script_is_killed_at_its_timeout(tmp_path: Path) -> None:
    pre = _script(tmp_path / "pre", "sleep 600\n")
    with pytest.raises(QuiesceError, match="did not finish within 1 s"):
        HookScripts(pre, None, timeout_s=1).freeze()


def test_a_post_thaw_owed_by_a_killed_agent_runs_at_its_next_start(tmp_path: Path) -> None:
    """The pre-freeze script stopped a service; the agent was killed while frozen: the next start
    runs post-thaw (once), so the service does not stay stopped."""
    log_file = tmp_path / "hooks.log"
    pre = _script(tmp_path / "pre", f"echo stop >> {log_file}\n")
    post = _script(tmp_path / "post", f"echo start >> {log_file}\n")
    marker = tmp_path / "state" / "thaw-pending"
    HookScripts(pre, post, thaw_marker=marker).freeze()  # ...and the process dies here
    assert marker.exists()

    restarted = HookScripts(None, post, thaw_marker=marker)
    assert restarted.recover_thaw() is True
    assert log_file.read_text().splitlines() == ["stop", "start"]
    assert not marker.exists() and restarted.recover_thaw() is False  # owed once only

    # A freeze that ends normally owes nothing.
    with Quiesce([HookScripts(pre, post, thaw_marker=marker)]):
        assert marker.exists()
    assert not marker.exists()
