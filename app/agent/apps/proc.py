"""Running the databases' own client tools: finding them, bounded stderr, cancellation, failure text.

Dumps and restores go through the real tools (pg_dump, mariadb-dump...) because they are what the
database vendors keep correct for every object type and server version; this module is the one place
that starts them. Arguments are always a list (no shell), secrets travel in the environment or in a
0600 file (see the client modules), and a tool's stderr is kept bounded (its last ``STDERR_LIMIT``
bytes): a tool that prints a warning per row must not grow the agent's memory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from app.agent.apps.errors import QueryFailed, ToolMissing

#: Bytes of a tool's stderr kept (the end: tools print the decisive error last).
STDERR_LIMIT = 16 << 10
#: Characters of stderr quoted in an error message.
MESSAGE_LIMIT = 1500
#: How often a running tool checks the caller's cancel event.
CANCEL_POLL_S = 0.5


def find_tool(names: Sequence[str], package: str, bindir: str | None = None) -> str:
    """Path of the first of ``names`` found (in ``bindir`` if given, else on PATH).

    Raises ``ToolMissing`` naming the Debian package to install, the fix an operator needs.
    """
    for name in names:
        found = shutil.which(name, path=bindir) if bindir else shutil.which(name)
        if found:
            return found
    where = f" in {bindir}" if bindir else ""
    raise ToolMissing(f"{' or '.join(names)} not found{where}: install the Debian package {package}")


@functools.lru_cache(maxsize=32)
def tool_version(path: str) -> str:
    """The tool's ``--version`` line ("pg_dump (PostgreSQL) 15.20 ..."); cached per path."""
    try:
        done = subprocess.run(  # noqa: S603 - a tool path we resolved, fixed argument
            [path, "--version"], capture_output=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolMissing(f"{os.path.basename(path)} cannot run: {exc}") from None
    text = (done.stdout or done.stderr).decode(errors="replace").strip()
    if done.returncode != 0 or not text:
        raise ToolMissing(f"{os.path.basename(path)} --version failed: {text[:200]}")
    return text.splitlines()[0]


def failure_text(tool: str, returncode: int, stderr: str) -> str:
    """ "pg_dump failed: <its last error lines>", or how it died when it said nothing."""
    detail = stderr.strip()
    if len(detail) > MESSAGE_LIMIT:
        detail = "..." + detail[-MESSAGE_LIMIT:]
    if returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    return f"{tool} failed ({how}): {detail}" if detail else f"{tool} failed ({how})"


class OutputTail:
    """Reads a pipe to its end in a thread, keeping only the last ``limit`` bytes.

    Reading it at all matters as much as bounding it: a tool blocked on a full stderr pipe would stop
    writing its dump and the backup would hang.
    """

    def __init__(self, pipe: IO[bytes], limit: int = STDERR_LIMIT) -> None:
        self._pipe = pipe
        self._limit = limit
        self._buf = bytearray()
        self._dropped = False
        self._thread = threading.Thread(target=self._run, name="tool-stderr", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            while piece := self._pipe.read1(65536):  # type: ignore[attr-defined]
                self._buf += piece
                if len(self._buf) > self._limit:
                    del self._buf[: len(self._buf) - self._limit]
                    self._dropped = True

    def text(self, timeout: float = 10.0) -> str:
        """What was kept, once the pipe is closed (or ``timeout`` passed)."""
        self._thread.join(timeout)
        text = self._buf.decode(errors="replace")
        return ("...\n" + text) if self._dropped else text


class Tool:
    """One running tool: its process, the tail of its stderr, and cancellation.

    A context manager: leaving the block early (an exception, a cancelled backup) kills the process
    and reaps it, so no dump keeps running after the job that wanted it is gone.
    """

    def __init__(
        self,
        args: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = subprocess.PIPE,
        cancel: threading.Event | None = None,
    ) -> None:
        self.name = os.path.basename(args[0])
        self.proc = subprocess.Popen(  # noqa: S603 - list arguments, no shell
            list(args),
            stdin=stdin,
            stdout=stdout,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # a terminal's Ctrl-C for the agent is the agent's to handle
        )
        assert self.proc.stderr is not None
        self._stderr = OutputTail(self.proc.stderr)
        self.cancelled = False
        self._done = threading.Event()
        if cancel is not None:
            threading.Thread(target=self._watch, args=(cancel,), name="tool-cancel", daemon=True).start()

    def _watch(self, cancel: threading.Event) -> None:
        while not self._done.is_set():
            if cancel.wait(CANCEL_POLL_S):
                if not self._done.is_set():
                    self.cancelled = True
                    self.kill()
                return

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    @property
    def stdin(self) -> IO[bytes]:
        assert self.proc.stdin is not None
        return self.proc.stdin

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def wait(self) -> int:
        """Close our ends of the pipes, reap the process, return its exit status."""
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        returncode = self.proc.wait()
        self._done.set()
        return returncode

    def stderr(self) -> str:
        return self._stderr.text()

    def failure(self, returncode: int) -> str:
        return failure_text(self.name, returncode, self.stderr())

    def __enter__(self) -> Tool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.wait()


@dataclass(frozen=True, slots=True)
class Completed:
    stdout: bytes
    stderr: str


def run_tool(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input: bytes = b"",
    timeout: float = 300.0,
    what: str | None = None,
) -> Completed:
    """Run a short control command (psql, mariadb) to its end; raise ``QueryFailed`` on any failure.

    ``input`` goes to stdin, which keeps SQL off the command line (and out of ``ps``).
    """
    name = what or os.path.basename(args[0])
    try:
        done = subprocess.run(  # noqa: S603 - list arguments, no shell
            list(args),
            input=input,
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise QueryFailed(f"{name} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise QueryFailed(f"{name} cannot run: {exc}") from None
    stderr = done.stderr[-STDERR_LIMIT:].decode(errors="replace")
    if done.returncode != 0:
        raise QueryFailed(failure_text(name, done.returncode, stderr), stderr=stderr)
    return Completed(done.stdout, stderr)


def iter_lines_bounded(text: str, limit: int = 20) -> Iterator[str]:
    """The last ``limit`` non-empty lines of a tool's output (for warnings lists)."""
    lines = [line for line in text.splitlines() if line.strip()]
    yield from lines[-limit:]
