"""An independent, deliberately simple reader of the simulator: the "expected" side of tests.

It shares no code with :mod:`app.vadp`: it reads one object at a time, asks for whole data
objects (``runtime``, ``config``, ``summary``) instead of nested property paths, and walks
parent links with one call per step. Slow, but obviously right, which is what a reference
must be. Everything still goes through the PropertyCollector, because reading an unset
property by attribute access fails the request on the simulator.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from app.vadp.types import VCenterEndpoint
from tests.support.vcsim import VcsimServer

_PC = vmodl.query.PropertyCollector


def endpoint(server: VcsimServer, **overrides: Any) -> VCenterEndpoint:
    """The endpoint of ``server`` with the credentials it printed (TLS checks off by default)."""
    settings: dict[str, Any] = {
        "url": server.url,
        "username": server.username,
        "password": server.password,
        "verify_tls": False,
        "timeout_s": 20.0,
    }
    settings.update(overrides)
    return VCenterEndpoint(**settings)


@contextmanager
def session(server: VcsimServer) -> Iterator[Any]:
    """A pyVmomi ServiceInstance logged in to ``server``."""
    service_instance = SmartConnect(
        protocol="https" if server.tls else "http",
        host=server.host,
        port=server.port,
        user=server.username,
        pwd=server.password,
        disableSslCertValidation=True,
    )
    try:
        yield service_instance
    finally:
        Disconnect(service_instance)


def props(service_instance: Any, obj: Any, *paths: str) -> dict[str, Any]:
    """Read ``paths`` of one object; unset properties are simply absent."""
    spec = _PC.FilterSpec(
        objectSet=[_PC.ObjectSpec(obj=obj, skip=False)],
        propSet=[_PC.PropertySpec(type=type(obj), pathSet=list(paths))],
    )
    result = service_instance.RetrieveContent().propertyCollector.RetrieveProperties([spec])
    return {prop.name: prop.val for prop in result[0].propSet} if result else {}


def objects(service_instance: Any, kind: Any) -> list[Any]:
    """All managed objects of ``kind`` (a ContainerView read through its ``view`` property)."""
    content = service_instance.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return list(props(service_instance, view, "view").get("view", []))
    finally:
        view.DestroyView()


def find(service_instance: Any, kind: Any, name: str) -> Any:
    for obj in objects(service_instance, kind):
        if props(service_instance, obj, "name")["name"] == name:
            return obj
    raise LookupError(f"no {kind.__name__} named {name!r}")


def datacenter_of(service_instance: Any, obj: Any) -> str | None:
    current = props(service_instance, obj, "parent").get("parent")
    while current is not None:
        if isinstance(current, vim.Datacenter):
            return str(props(service_instance, current, "name")["name"])
        current = props(service_instance, current, "parent").get("parent")
    return None


def folder_path(service_instance: Any, vm: Any) -> str:
    names: list[str] = []
    current = props(service_instance, vm, "parent").get("parent")
    while current is not None:
        current_props = props(service_instance, current, "name", "parent")
        names.append(current_props["name"])
        if isinstance(current, vim.Datacenter):
            break
        current = current_props.get("parent")
    return "/" + "/".join(reversed(names))


def closed_port() -> int:
    """A local port with nothing listening on it (free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_task(service_instance: Any, task: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        info = props(service_instance, task, "info")["info"]
        if info.state == vim.TaskInfo.State.success:
            return
        if info.state == vim.TaskInfo.State.error:
            raise RuntimeError(f"task failed: {info.error}")
        time.sleep(0.05)
    raise TimeoutError("task did not finish")
