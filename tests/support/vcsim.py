"""Building and running VMware's govmomi vCenter simulator (vcsim) for tests.

vcsim is compiled from ``tests/vcsim/main.go`` against the govmomi sources that Debian
packages (``golang-github-vmware-govmomi-dev``), so no network is needed. The binary is
cached under ``.cache/vcsim`` by the hash of ``main.go``: editing the simulator main
rebuilds it, everything else reuses it.
"""

from __future__ import annotations

import hashlib
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE = REPO_ROOT / "tests" / "vcsim" / "main.go"
CACHE_DIR = REPO_ROOT / ".cache" / "vcsim"
GOPATH = Path(os.environ.get("VCSIM_GOPATH", "/usr/share/gocode"))
GOVMOMI = GOPATH / "src" / "github.com" / "vmware" / "govmomi"
BOOTSTRAP_HINT = (
    "run the test bootstrap first; it installs the Debian packages golang-go, gcc and "
    "golang-github-vmware-govmomi-dev (apt-get install golang-go gcc golang-github-vmware-govmomi-dev)"
)
URL_PREFIX = "VCSIM_URL "


class VcsimUnavailable(RuntimeError):
    """vcsim cannot be built or started on this machine."""


def build_vcsim() -> Path:
    """Compile the simulator if needed; return the path of the binary."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = CACHE_DIR / f"vcsim-{digest}"
    if binary.is_file():
        return binary
    go = shutil.which("go")
    if go is None:
        raise VcsimUnavailable(f"the Go toolchain ('go') is not installed; {BOOTSTRAP_HINT}")
    if not (GOVMOMI / "simulator").is_dir() or not (GOVMOMI / "vapi" / "simulator").is_dir():
        raise VcsimUnavailable(f"the govmomi sources are missing under {GOPATH}; {BOOTSTRAP_HINT}")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.partial")
    env = {
        **os.environ,
        "GOPATH": str(GOPATH),
        "GO111MODULE": "off",
        "GOFLAGS": "",
        "GOCACHE": str(CACHE_DIR / "gocache"),
    }
    result = subprocess.run(
        [go, "build", "-o", str(partial), SOURCE.name],
        cwd=SOURCE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise VcsimUnavailable(f"building vcsim failed ({BOOTSTRAP_HINT}):\n{result.stderr[-4000:]}")
    os.replace(partial, binary)  # atomic, so concurrent test runs never see half a binary
    return binary


class VcsimServer:
    """One running simulator process.

    ``url`` is the SDK URL without credentials (``http://127.0.0.1:PORT/sdk``);
    ``username``/``password`` are the credentials the simulator printed (any non-empty pair
    works unless it was started with ``-username``/``-password``).
    """

    def __init__(self, binary: Path | None = None) -> None:
        self._binary = binary
        self._process: subprocess.Popen[str] | None = None
        self._tmpdir: str | None = None
        self._own_tmpdir = True
        self.url = ""
        self.host = ""
        self.port = 0
        self.username = ""
        self.password = ""
        self.tls = False

    def start(
        self,
        tls: bool = False,
        extra_args: Sequence[str] = (),
        timeout_s: float = 60.0,
        datastore_dir: Path | None = None,
    ) -> VcsimServer:
        """Start the simulator and wait until it listens.

        ``datastore_dir`` puts its datastores (and log) in a directory of the caller's, e.g.
        a small tmpfs to run a datastore short of space; it is emptied, not removed, on stop.
        """
        if self._process is not None:
            raise RuntimeError("this simulator is already running")
        binary = self._binary or build_vcsim()
        # Each simulator keeps its datastores in its own TMPDIR, removed in stop() even if
        # the process had to be killed before cleaning up itself.
        self._own_tmpdir = datastore_dir is None
        self._tmpdir = str(datastore_dir) if datastore_dir else tempfile.mkdtemp(prefix="vcsim-")
        stderr_path = Path(self._tmpdir) / "stderr.log"
        args = [str(binary), "-listen", "127.0.0.1:0", *(["-tls"] if tls else []), *extra_args]
        with stderr_path.open("w") as stderr:
            self._process = subprocess.Popen(
                args,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env={**os.environ, "TMPDIR": self._tmpdir},
            )
        lines: queue.Queue[str | None] = queue.Queue()
        _drain(self._process.stdout, lines)
        try:
            raw = self._wait_for_url(lines, timeout_s)
        except VcsimUnavailable as exc:
            self._process.kill()
            self._process.wait()
            log = stderr_path.read_text(errors="replace")[-4000:]
            self.stop()
            raise VcsimUnavailable(f"{exc}; its stderr:\n{log}") from None
        except BaseException:
            self.stop()
            raise
        self._set_url(raw, tls)
        return self

    def _wait_for_url(self, lines: queue.Queue[str | None], timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                raise VcsimUnavailable("vcsim exited before listening (see its stderr)")
            if line.startswith(URL_PREFIX):
                return line[len(URL_PREFIX) :].strip()
        raise VcsimUnavailable(f"vcsim did not print its URL within {timeout_s:g} s")

    def _set_url(self, raw: str, tls: bool) -> None:
        parts = urlsplit(raw)
        if parts.hostname is None or parts.port is None:
            raise VcsimUnavailable(f"vcsim printed an unusable URL: {raw!r}")
        self.host, self.port, self.tls = parts.hostname, parts.port, tls
        self.username = unquote(parts.username or "")
        self.password = unquote(parts.password or "")
        self.url = f"{parts.scheme}://{self.host}:{self.port}{parts.path}"

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate (SIGTERM lets vcsim remove its files), kill if it does not exit."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=timeout_s)
        if self._tmpdir is not None:
            if self._own_tmpdir:
                shutil.rmtree(self._tmpdir, ignore_errors=True)
            else:
                for entry in Path(self._tmpdir).iterdir():
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
            self._tmpdir = None

    def __enter__(self) -> VcsimServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _drain(stream: IO[str] | None, into: queue.Queue[str | None]) -> None:
    """Read ``stream`` line by line in a daemon thread (so the pipe never fills up)."""

    def run() -> None:
        for line in stream or ():
            into.put(line)
        into.put(None)

    threading.Thread(target=run, daemon=True, name="vcsim-output").start()
