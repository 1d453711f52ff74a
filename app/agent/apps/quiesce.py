"""Quiescing applications around a VM snapshot: freeze just before it, thaw right after.

The agent runs ``freeze()``, asks for the snapshot, then ``thaw()``; ``Quiesce`` strings the steps
together (user scripts first, databases next; thawed in reverse) and thaws whatever froze if a later
step fails, so a failure never leaves an application stopped.

* PostgreSQL needs nothing held: its WAL makes any snapshot recoverable. ``CHECKPOINT`` just before
  makes that recovery short (little WAL to replay after a restore).
* MariaDB/MySQL: ``FLUSH TABLES WITH READ LOCK`` on one connection, kept open by a ``mariadb``
  client process, until thaw. Three things end it even if thaw never comes: the server itself closes
  the session after ``hold_timeout_s`` idle seconds (``SET SESSION wait_timeout``, no agent needed),
  the client exits when the agent dies (its stdin closes), and acquiring it gives up after
  ``lock_timeout_s`` (``lock_wait_timeout``) rather than stalling writers behind a long query.
  A thaw that finds the lock already gone raises ``QuiesceError``: the snapshot was taken, but may be
  crash-consistent only.
* ``HookScripts``: the customer's own pre-freeze and post-thaw executables, each with a timeout (its
  whole process group is killed). Like VMware Tools, post-thaw also runs when pre-freeze failed, so a
  script that stopped a service half-way gets to start it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol

from app.agent.apps.errors import QueryFailed, QuiesceError
from app.agent.apps.mysql_client import MysqlConnection, connection_options
from app.agent.apps.postgres_client import PostgresConnection, Psql
from app.agent.apps.proc import OutputTail, Tool, failure_text

log = logging.getLogger(__name__)


class Quiescer(Protocol):
    name: str

    def freeze(self) -> None: ...

    def thaw(self) -> None:
        """Undo ``freeze``; also called after a failed ``freeze`` (must then be harmless)."""
        ...


class PostgresCheckpoint:
    """``CHECKPOINT`` before the snapshot (superuser or ``pg_checkpoint``); nothing held after."""

    def __init__(self, conn: PostgresConnection, *, timeout_s: float = 300.0) -> None:
        self.name = "postgresql"
        self._psql = Psql(conn, timeout_s=timeout_s)

    def freeze(self) -> None:
        try:
            self._psql.execute("CHECKPOINT;\n")
        except QueryFailed as exc:
            raise QuiesceError(f"PostgreSQL CHECKPOINT failed: {exc}") from None

    def thaw(self) -> None:
        """Nothing to release."""


class MysqlReadLock:
    """``FLUSH TABLES WITH READ LOCK`` held on one connection from ``freeze()`` to ``thaw()``."""

    def __init__(
        self,
        conn: MysqlConnection,
        *,
        hold_timeout_s: int = 300,
        lock_timeout_s: int = 60,
        thaw_timeout_s: float = 30.0,
    ) -> None:
        if hold_timeout_s < 1 or lock_timeout_s < 1:
            raise ValueError("timeouts must be at least one second")
        self.name = "mysql"
        self.conn = conn
        self.hold_timeout_s = hold_timeout_s
        self.lock_timeout_s = lock_timeout_s
        self.thaw_timeout_s = thaw_timeout_s
        self.connection_id: int | None = None  # the server's id of the session holding the lock
        self._tool: Tool | None = None
        self._pending = b""

    def freeze(self) -> None:
        if self._tool is not None:
            raise QuiesceError("MariaDB is already frozen")
        conn = self.conn
        with connection_options(conn) as options:  # the password file is gone once connected
            self._tool = Tool(
                [
                    conn.client_tool(),
                    *options,
                    "--batch",
                    "--raw",
                    "--skip-column-names",
                    "--skip-reconnect",
                    "--unbuffered",
                    f"--connect-timeout={conn.connect_timeout_s}",
                ],
                stdin=subprocess.PIPE,
            )
            try:
                self._send(
                    f"SET SESSION lock_wait_timeout = {self.lock_timeout_s};\n"
                    f"SET SESSION wait_timeout = {self.hold_timeout_s};\n"
                    "FLUSH TABLES WITH READ LOCK;\n"
                    "SELECT CONCAT('vmr-frozen ', CONNECTION_ID());\n"
                )
                line = self._read_line(conn.connect_timeout_s + self.lock_timeout_s + 10)
                if not line.startswith("vmr-frozen "):
                    raise EOFError(line)
                self.connection_id = int(line.split()[1])
            except (OSError, EOFError, TimeoutError, ValueError) as exc:
                stderr = self._end(kill=True)
                why = "timed out" if isinstance(exc, TimeoutError) else failure_text("mariadb", 1, stderr)
                raise QuiesceError(f"FLUSH TABLES WITH READ LOCK failed: {why}") from None
        log.info("MariaDB frozen (connection %s)", self.connection_id)

    def thaw(self) -> None:
        if self._tool is None:
            return
        held = False
        try:
            self._send("UNLOCK TABLES;\nSELECT 'vmr-thawed';\n")
            held = self._read_line(self.thaw_timeout_s) == "vmr-thawed"
        except (OSError, EOFError, TimeoutError):
            pass
        stderr = self._end()
        if not held:
            detail = stderr.strip().splitlines()[-1] if stderr.strip() else "the connection was closed"
            raise QuiesceError(
                f"the MariaDB read lock was gone before thaw ({detail}; the server ends it after"
                f" {self.hold_timeout_s} s): the snapshot may be crash-consistent only"
            )
        log.info("MariaDB thawed (connection %s)", self.connection_id)

    # -- the client process ------------------------------------------------------------------------

    def _send(self, sql: str) -> None:
        assert self._tool is not None
        self._tool.stdin.write(sql.encode())
        self._tool.stdin.flush()

    def _read_line(self, timeout_s: float) -> str:
        """One line of the client's output, read from the raw pipe (no buffering to get stuck in)."""
        assert self._tool is not None
        fd = self._tool.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 4096)
                if not data:
                    raise EOFError
                self._pending += data
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode(errors="replace").strip()

    def _end(self, *, kill: bool = False) -> str:
        """Close the session (end of input makes the client quit; killed if it does not)."""
        tool, self._tool = self._tool, None
        self._pending = b""
        if tool is None:
            return ""
        if kill:  # a statement still running would keep the client from reading its end of input
            tool.kill()
        with contextlib.suppress(OSError):
            tool.stdin.close()
        try:
            tool.proc.wait(timeout=self.thaw_timeout_s)
        except subprocess.TimeoutExpired:
            tool.kill()
        tool.wait()
        return tool.stderr()


class HookScripts:
    """The customer's pre-freeze and post-thaw executables (either may be None)."""

    def __init__(
        self,
        pre_freeze: str | os.PathLike[str] | None = None,
        post_thaw: str | os.PathLike[str] | None = None,
        *,
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
        thaw_marker: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = "scripts"
        self.pre_freeze = os.fspath(pre_freeze) if pre_freeze is not None else None
        self.post_thaw = os.fspath(post_thaw) if post_thaw is not None else None
        self.timeout_s = timeout_s
        self.env = dict(env) if env is not None else None
        # Exists while a post-thaw is owed (see recover_thaw): a pre-freeze script that stopped
        # a service must see its post-thaw run even if this process is killed in between.
        self.thaw_marker = Path(thaw_marker) if thaw_marker is not None else None

    def freeze(self) -> None:
        if self.post_thaw is not None and self.thaw_marker is not None:
            try:
                self.thaw_marker.parent.mkdir(parents=True, exist_ok=True)
                self.thaw_marker.write_text(f"{self.post_thaw}\n")
            except OSError as exc:  # a safety net only: the freeze itself goes on
                log.warning(
                    "cannot write %s (%s): a crash while frozen would skip post-thaw", self.thaw_marker, exc
                )
        if self.pre_freeze is not None:
            run_script(self.pre_freeze, "pre-freeze", timeout_s=self.timeout_s, env=self.env)

    def thaw(self) -> None:
        if self.post_thaw is not None:
            run_script(self.post_thaw, "post-thaw", timeout_s=self.timeout_s, env=self.env)
        if self.thaw_marker is not None:
            self.thaw_marker.unlink(missing_ok=True)

    def recover_thaw(self) -> bool:
        """At start: run the post-thaw an earlier process owed (it was killed while frozen).
        True when it ran; a failure is logged and the marker kept for the next start."""
        if self.thaw_marker is None or not self.thaw_marker.exists():
            return False
        log.warning("the agent stopped while the guest was frozen: running the post-thaw script now")
        try:
            self.thaw()
        except QuiesceError as exc:
            log.error("the owed post-thaw script failed: %s", exc)
            return False
        return True


def run_script(path: str, stage: str, *, timeout_s: float, env: Mapping[str, str] | None = None) -> str:
    """Run one hook (no shell, no arguments but the stage); its output (bounded) is returned or
    quoted in the ``QuiesceError``. The process group is killed at the timeout."""
    environment = dict(os.environ if env is None else env)
    environment["VMR_HOOK"] = stage
    try:
        proc = subprocess.Popen(  # noqa: S603 - the operator's own script, list arguments
            [path, stage],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    except OSError as exc:
        raise QuiesceError(f"{stage} script {path} cannot run: {exc.strerror}") from None
    assert proc.stdout is not None
    output = OutputTail(proc.stdout)
    try:
        returncode = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise QuiesceError(
            f"{stage} script {path} did not finish within {timeout_s:.0f} s: {output.text(1.0)[-500:]}"
        ) from None
    text = output.text()
    if returncode != 0:
        raise QuiesceError(f"{stage} script {failure_text(path, returncode, text)}")
    return text


class Quiesce:
    """Freeze ``steps`` in order, thaw them in reverse; a context manager or explicit calls.

    ``freeze()`` that fails thaws what it froze (and the failing step) before raising. ``thaw()``
    thaws everything even when a step fails, then raises one ``QuiesceError`` naming the failures.
    """

    def __init__(self, steps: Sequence[Quiescer]) -> None:
        self._steps = list(steps)
        self._frozen: list[Quiescer] = []

    def freeze(self) -> None:
        if self._frozen:
            raise QuiesceError("already frozen")
        for step in self._steps:
            self._frozen.append(step)  # thawed even if its own freeze fails (see Quiescer.thaw)
            try:
                step.freeze()
            except BaseException as exc:
                for problem in self._thaw_all():
                    exc.add_note(f"while thawing after the failure: {problem}")
                raise

    def thaw(self) -> None:
        problems = self._thaw_all()
        if problems:
            raise QuiesceError("; ".join(problems))

    def _thaw_all(self) -> list[str]:
        problems = []
        while self._frozen:
            step = self._frozen.pop()
            try:
                step.thaw()
            except Exception as exc:
                problems.append(f"{step.name}: {exc}")
        return problems

    def __enter__(self) -> Quiesce:
        self.freeze()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        problems = self._thaw_all()
        if problems and exc is None:
            raise QuiesceError("; ".join(problems))
        for problem in problems:
            log.warning("thaw failed: %s", problem)
