"""A whole deployment in real processes: ``vmrecovery serve``, ``vmrecovery proxy`` and vcsim.

Tests drive it over HTTP as a user would; nothing of the service is imported into the test
process except to name things.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pyVmomi import vim

from tests.support.vcsim import VcsimServer
from tests.system.test_serve import free_port
from tests.vadp import reference
from tests.vadp.disks import flat_name, get_file

VMRECOVERY = str(Path(sys.executable).with_name("vmrecovery"))
TERMINAL = {"succeeded", "failed", "skipped", "cancelled"}


class Stack:
    def __init__(self, workdir: Path, vcsim: VcsimServer, **settings: str) -> None:
        self.workdir = workdir
        self.vcsim = vcsim
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "VMR_DATA_DIR": str(workdir / "var"),
            "VMR_PORT": str(self.port),
            "VMR_JOB_LEASE_S": "15",
            **settings,
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None
        self.api: httpx.Client | None = None
        self.proxy_token = ""
        self.tenant_id = ""
        self.vcenter_id = ""

    # processes

    def start(self) -> Stack:
        self.server = self._spawn(["serve", "--no-embedded-proxy"], "serve.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.server.poll() is None, self.log("serve.log")
            time.sleep(0.1)
        key = subprocess.run(
            [VMRECOVERY, "create-operator-key"],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.api = httpx.Client(
            base_url=f"{self.base}/api/v1", headers={"Authorization": f"Bearer {key}"}, timeout=60
        )
        # Restores over existing VMs go ahead without an operator here (approvals: tests/api).
        self.tenant_id = self.post("/tenants", {"name": "Acme", "restore_approval_required": False})["id"]
        self.vcenter_id = self.post(
            "/vcenters",
            {
                "tenant_id": self.tenant_id,
                "name": "vc",
                "url": self.vcsim.url,
                "username": self.vcsim.username,
                "password": self.vcsim.password,
            },
        )["id"]
        self.sync()
        hosts = self.get("/hosts", limit=500)["items"]
        proxy = self.post("/proxies", {"name": "proxy-1", "host_ids": [h["id"] for h in hosts]})
        self.proxy_token = proxy["token"]
        (self.workdir / "proxy.token").write_text(self.proxy_token)
        self.start_proxy()
        return self

    def start_proxy(self) -> None:
        self.proxy = self._spawn(
            [
                "proxy",
                "--server",
                self.base,
                "--token-file",
                str(self.workdir / "proxy.token"),
                "--workers",
                "2",
            ],
            "proxy.log",
        )

    def kill_proxy(self) -> None:
        assert self.proxy is not None
        self.proxy.send_signal(signal.SIGKILL)
        self.proxy.wait(timeout=10)

    def stop(self) -> None:
        for process in (self.proxy, self.server):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if self.api is not None:
            self.api.close()

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("ab")
        return subprocess.Popen([VMRECOVERY, *args], env=self.env, cwd=self.workdir, stdout=log, stderr=log)

    def log(self, name: str) -> str:
        path = self.workdir / name
        return path.read_text(errors="replace")[-20000:] if path.exists() else ""

    # API

    def get(self, path: str, **params: Any) -> Any:
        assert self.api is not None
        response = self.api.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()

    def post(self, path: str, body: Any, expect: int | None = None) -> Any:
        assert self.api is not None
        response = self.api.post(path, json=body)
        if expect is not None:
            assert response.status_code == expect, response.text
        else:
            assert response.status_code in (200, 201, 202), response.text
        return response.json() if response.content else None

    def sync(self) -> None:
        self.post(f"/vcenters/{self.vcenter_id}/sync", None)

    def vm(self, name: str) -> dict[str, Any]:
        (vm,) = [
            v for v in self.get("/vms", q=name, include_gone="true", limit=500)["items"] if v["name"] == name
        ]
        return vm

    def backup(self, vm_name: str) -> dict[str, Any]:
        (job,) = self.post("/jobs", {"vm_ids": [self.vm(vm_name)["id"]]})
        return job

    def wait_job(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.get(f"/jobs/{job_id}")
            if job["state"] in TERMINAL:
                return job  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not end in {timeout_s} s: {job}\n{self.log('proxy.log')}")

    def wait_restore(self, restore_id: str, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            restore = self.get(f"/restores/{restore_id}")
            if restore["state"] in ("succeeded", "failed", "cancelled"):
                return restore  # type: ignore[no-any-return]
            time.sleep(0.2)
        raise AssertionError(f"restore {restore_id} did not end: {restore}\n{self.log('proxy.log')}")

    # vCenter side, read independently

    def snapshots_of(self, vm_name: str) -> list[str]:
        with reference.session(self.vcsim) as si:
            vm = reference.find(si, vim.VirtualMachine, vm_name)
            tree = reference.props(si, vm, "snapshot").get("snapshot")
            names: list[str] = []
            stack = list(tree.rootSnapshotList) if tree else []
            while stack:
                node = stack.pop()
                names.append(node.name)
                stack.extend(node.childSnapshotList or [])
            return names

    def disk_sha256(self, vm_name: str) -> str:
        with reference.session(self.vcsim) as si:
            vm = reference.find(si, vim.VirtualMachine, vm_name)
            datacenter = reference.datacenter_of(si, vm)
            config = reference.props(si, vm, "config")["config"]
            (disk,) = [d for d in config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk)]
        assert datacenter is not None
        return hashlib.sha256(get_file(self.vcsim, datacenter, flat_name(disk.backing.fileName))).hexdigest()

    def vm_exists(self, vm_name: str) -> bool:
        with reference.session(self.vcsim) as si:
            try:
                reference.find(si, vim.VirtualMachine, vm_name)
                return True
            except LookupError:
                return False
