"""The real command line, as a user runs it: separate processes, no test wiring."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

VMRECOVERY = str(Path(sys.executable).with_name("vmrecovery"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"vmrecovery serve exited with {process.returncode}:\n{out}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"{url} did not answer 200 within {timeout_s} s")


@pytest.fixture
def served_in_empty_dir(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    # No environment at all: no VMR_* settings, no PATH, no HOME.
    log = (tmp_path.parent / f"{tmp_path.name}-serve.log").open("wb")  # outside the empty dir
    process = subprocess.Popen(
        [VMRECOVERY, "serve", "--port", str(port)], cwd=tmp_path, env={}, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/readyz", process)
        yield base, tmp_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("vmrecovery serve did not stop on SIGTERM")


def test_serve_starts_with_nothing_configured(served_in_empty_dir: tuple[str, Path]) -> None:
    base, workdir = served_in_empty_dir
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    ready = httpx.get(f"{base}/readyz").json()
    assert ready == {"status": "ready", "checks": {"catalog": "ok", "migrations": "ok"}}
    spec = httpx.get(f"{base}/openapi.json").json()
    assert spec["info"]["title"] == "VM Recovery"
    assert "/api/v1/vms" in spec["paths"]
    assert httpx.get(f"{base}/docs").status_code == 200
    # Embedded defaults: the catalog and the generated key live under ./var.
    assert (workdir / "var" / "catalog.db").is_file()
    key_file = workdir / "var" / "secret.key"
    assert key_file.is_file() and (key_file.stat().st_mode & 0o777) == 0o600
    unauthenticated = httpx.get(f"{base}/api/v1/tenants")
    assert unauthenticated.status_code == 401
    assert unauthenticated.headers["content-type"] == "application/problem+json"


def test_operator_key_from_the_cli_works_against_the_running_service(
    served_in_empty_dir: tuple[str, Path],
) -> None:
    base, workdir = served_in_empty_dir
    created = subprocess.run(
        [VMRECOVERY, "create-operator-key", "--name", "first"],
        cwd=workdir,
        env={},
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip()
    assert key.startswith("vmr_") and len(created.stdout.strip().splitlines()) == 1
    headers = {"Authorization": f"Bearer {key}"}
    tenant = httpx.post(f"{base}/api/v1/tenants", json={"name": "Acme"}, headers=headers)
    assert tenant.status_code == 201
    keys = httpx.get(f"{base}/api/v1/api-keys", headers=headers).json()
    assert [k["name"] for k in keys["items"]] == ["first"]


def test_readyz_reports_a_catalog_that_needs_migrating(tmp_path: Path) -> None:
    port = free_port()
    env = {"VMR_AUTO_MIGRATE": "false", "VMR_PORT": str(port)}
    # Its log goes to a file: a pipe nobody reads would fill up and block the server.
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [VMRECOVERY, "serve"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/healthz", process)
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503
        assert "vmrecovery migrate" in ready.json()["checks"]["migrations"]
        migrated = subprocess.run(
            [VMRECOVERY, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
        )
        assert "up to date" in migrated.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)


def test_version_and_help() -> None:
    version = subprocess.run([VMRECOVERY, "version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip()
    for command in ("serve", "migrate", "create-operator-key", "version"):
        helped = subprocess.run([VMRECOVERY, command, "--help"], capture_output=True, text=True, check=True)
        assert "Usage" in helped.stdout
    assert os.access(VMRECOVERY, os.X_OK)
