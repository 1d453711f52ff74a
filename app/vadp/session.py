"""A logged-in vCenter session for the data path: SOAP calls, task waits and datastore HTTP.

The proxy agent opens one :class:`VCenterSession` per job (or per vCenter) and calls the
blocking functions of :mod:`app.vadp` with it from worker threads. The session owns

* the pyVmomi ServiceInstance (its SOAP stub keeps a pool of connections and is safe to
  share between threads),
* one ``httpx.Client`` for datastore file access (``/folder/...``), authenticated with the
  SOAP session's ``vmware_soap_session`` cookie, pooled and kept alive, and
* small caches (datacenter path and name of each datastore) needed to build file URLs.

Every pyVmomi exception is turned into a :class:`~app.vadp.errors.VCenterError` by
:meth:`VCenterSession.guard`, so no pyVmomi type ever reaches a caller.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from pyVmomi import vim, vmodl

from app.vadp.address import SdkAddress, ssl_context
from app.vadp.connection import classify, connect
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.types import DatastoreRef, SnapshotHandle, VCenterEndpoint, VmHandle

log = logging.getLogger(__name__)

_PC: Any = vmodl.query.PropertyCollector
SOAP_COOKIE = "vmware_soap_session"
DEFAULT_TASK_TIMEOUT_S = 3600.0
_POLL_START_S = 0.05
_POLL_MAX_S = 2.0
_MAX_PARENT_DEPTH = 64

# Faults whose meaning is clearer than "the vCenter answered X".
_FAULT_KINDS: tuple[tuple[Any, VCenterErrorKind], ...] = (
    (vmodl.fault.ManagedObjectNotFound, VCenterErrorKind.NOT_FOUND),
    (vim.fault.NotFound, VCenterErrorKind.NOT_FOUND),
    (vim.fault.FileNotFound, VCenterErrorKind.NOT_FOUND),
    (vim.fault.InvalidPowerState, VCenterErrorKind.INVALID_STATE),
    (vim.fault.InvalidState, VCenterErrorKind.INVALID_STATE),
    (vim.fault.TaskInProgress, VCenterErrorKind.INVALID_STATE),
    (vmodl.fault.NotSupported, VCenterErrorKind.UNSUPPORTED),
    (vmodl.fault.MethodNotFound, VCenterErrorKind.UNSUPPORTED),
)


def fault_text(fault: Any) -> str:
    """``FaultName: message`` of a pyVmomi fault object (raised, or a task's ``info.error``)."""
    name = type(fault).__name__
    message = getattr(fault, "msg", None) or ""
    if not message:
        for item in getattr(fault, "faultMessage", None) or ():
            message = getattr(item, "message", None) or ""
            if message:
                break
    return f"{name}: {message}" if message else name


# Faults of a condition that clears by itself: another task on the object (a vMotion, a DRS
# move, a consolidation) is running. The job is retried instead of failed for good.
_PASSING_FAULTS: tuple[Any, ...] = (vim.fault.TaskInProgress,)


def fault_passes(fault: Any) -> bool:
    return isinstance(fault, _PASSING_FAULTS)


def fault_kind(fault: Any, default: VCenterErrorKind) -> VCenterErrorKind:
    for fault_type, kind in _FAULT_KINDS:
        if isinstance(fault, fault_type):
            return kind
    return default


class VCenterSession:
    """One logged-in session; use :func:`open_session` to get one and close it when done."""

    def __init__(self, endpoint: VCenterEndpoint, service_instance: Any, stack: ExitStack) -> None:
        self.endpoint = endpoint
        self.address = SdkAddress.parse(endpoint.url)
        self._si = service_instance
        self._stack = stack
        self._content: Any = service_instance.RetrieveContent()
        self._lock = threading.Lock()
        self._http: httpx.Client | None = None
        self._datastores: dict[str, tuple[str, str]] = {}  # moid -> (datacenter path, name)
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP client and log out (errors while logging out are only logged)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            http_client, self._http = self._http, None
        if http_client is not None:
            http_client.close()
        self._stack.close()

    def __enter__(self) -> VCenterSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # --- SOAP -----------------------------------------------------------------------------

    @contextmanager
    def guard(self, what: str) -> Iterator[None]:
        """Turn any pyVmomi / network exception inside the block into a :class:`VCenterError`."""
        try:
            yield
        except VCenterError:
            raise
        except vmodl.MethodFault as exc:
            kind = fault_kind(exc, VCenterErrorKind.API_ERROR)
            if kind is VCenterErrorKind.API_ERROR:
                raise classify(exc, self.endpoint, connecting=False) from exc
            raise VCenterError(
                kind,
                f"{what}: the vCenter answered {fault_text(exc)}",
                transient=True if fault_passes(exc) else None,
            ) from exc
        except (OSError, http.client.HTTPException) as exc:
            raise classify(exc, self.endpoint, connecting=False) from exc

    @property
    def content(self) -> Any:
        """The ``ServiceContent`` (root folder, managers)."""
        return self._content

    def managed(self, kind: Any, moid: str) -> Any:
        """A pyVmomi managed-object reference of ``kind`` bound to this session's stub."""
        return kind(moid, self._si._stub)

    def vm(self, handle: VmHandle) -> Any:
        return self.managed(vim.VirtualMachine, handle.moid)

    def snapshot(self, handle: SnapshotHandle) -> Any:
        return self.managed(vim.vm.Snapshot, handle.moid)

    def read(self, obj: Any, *paths: str) -> dict[str, Any]:
        """Read ``paths`` of one object through the PropertyCollector; unset ones are absent."""
        spec = _PC.FilterSpec(
            objectSet=[_PC.ObjectSpec(obj=obj, skip=False)],
            propSet=[_PC.PropertySpec(type=type(obj), pathSet=list(paths))],
        )
        with self.guard(f"reading {obj._moId}"):
            result = self._content.propertyCollector.RetrievePropertiesEx([spec], _PC.RetrieveOptions())
        objects = result.objects if result is not None else None
        if not objects:
            return {}
        return {prop.name: prop.val for prop in objects[0].propSet or ()}

    def read_many(self, objects: Sequence[Any], paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read ``paths`` of several objects of one type in one call; keyed by moid."""
        if not objects:
            return {}
        spec = _PC.FilterSpec(
            objectSet=[_PC.ObjectSpec(obj=obj, skip=False) for obj in objects],
            propSet=[_PC.PropertySpec(type=type(objects[0]), pathSet=list(paths))],
        )
        return self._retrieve(spec)

    def read_all(self, kind: Any, paths: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Read ``paths`` of every object of ``kind`` in the inventory (one container view)."""
        view_manager = self._content.viewManager
        with self.guard(f"listing {kind.__name__} objects"):
            view = view_manager.CreateContainerView(self._content.rootFolder, [kind], True)
        try:
            traverse = _PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
            spec = _PC.FilterSpec(
                objectSet=[_PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
                propSet=[_PC.PropertySpec(type=kind, pathSet=list(paths))],
            )
            return self._retrieve(spec)
        finally:
            with self.guard("destroying a container view"):
                view.DestroyView()

    def _retrieve(self, spec: Any) -> dict[str, dict[str, Any]]:
        collector = self._content.propertyCollector
        found: dict[str, dict[str, Any]] = {}
        with self.guard("reading properties"):
            result = collector.RetrievePropertiesEx([spec], _PC.RetrieveOptions())
            while result is not None:
                for item in result.objects or ():
                    found[item.obj._moId] = {prop.name: prop.val for prop in item.propSet or ()}
                if not result.token:
                    break
                result = collector.ContinueRetrievePropertiesEx(token=result.token)
        return found

    def wait_for_task(self, task: Any, what: str, timeout_s: float = DEFAULT_TASK_TIMEOUT_S) -> Any:
        """Wait for ``task``; return its result, raise a ``task_failed`` error if it failed.

        ``info.state``, ``info.error`` and ``info.result`` are read as separate properties:
        the whole ``info`` of some tasks (RemoveSnapshot on the simulator) does not
        deserialize in pyVmomi 9.
        """
        deadline = time.monotonic() + timeout_s
        delay = _POLL_START_S
        while True:
            state = self.read(task, "info.state").get("info.state")
            if state == vim.TaskInfo.State.success:
                return self.read(task, "info.result").get("info.result")
            if state == vim.TaskInfo.State.error:
                error = self.read(task, "info.error").get("info.error")
                kind = fault_kind(error, VCenterErrorKind.TASK_FAILED)
                detail = fault_text(error) if error is not None else "no reason given"
                raise VCenterError(kind, f"{what} failed: {detail}", transient=fault_passes(error))
            if time.monotonic() > deadline:
                raise VCenterError(
                    VCenterErrorKind.TIMEOUT,
                    f"{what} did not finish within {timeout_s:g} s (task {task._moId} is still {state})",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, _POLL_MAX_S)

    def run_task(
        self, what: str, start: Any, *args: Any, timeout_s: float = DEFAULT_TASK_TIMEOUT_S, **kwargs: Any
    ) -> Any:
        """Start a task with ``start(*args, **kwargs)`` and wait for it."""
        with self.guard(what):
            task = start(*args, **kwargs)
        return self.wait_for_task(task, what, timeout_s)

    # --- datastore files over HTTP --------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        """The pooled HTTP client for ``/folder`` (thread-safe; created on first use)."""
        with self._lock:
            if self._closed:
                raise VCenterError(VCenterErrorKind.API_ERROR, "the vCenter session is closed")
            if self._http is None:
                self._http = httpx.Client(
                    base_url=f"{self.address.scheme}://{self.address.display}",
                    verify=ssl_context(self.endpoint.verify_tls),
                    timeout=httpx.Timeout(self.endpoint.timeout_s),
                    headers={"Cookie": self.soap_cookie()},
                    limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                )
            return self._http

    def soap_cookie(self) -> str:
        """``vmware_soap_session=...`` of the SOAP session, as sent in a ``Cookie`` header."""
        raw = str(getattr(self._si._stub, "cookie", "") or "")
        for part in raw.split(";"):
            name, _, _value = part.strip().partition("=")
            if name == SOAP_COOKIE:
                return part.strip()
        raise VCenterError(
            VCenterErrorKind.API_ERROR,
            f"the vCenter at {self.address.display} gave the SOAP session no {SOAP_COOKIE} cookie",
        )

    def datastore(self, moid: str) -> DatastoreRef:
        return DatastoreRef(moid, self._datastore_location(moid)[1])

    def file_url(self, datastore_moid: str, path: str) -> str:
        """The ``/folder`` URL (relative to the server) of ``path`` on a datastore."""
        datacenter, name = self._datastore_location(datastore_moid)
        query = urlencode({"dcPath": datacenter, "dsName": name})
        return f"/folder/{quote(path.lstrip('/'), safe='/')}?{query}"

    def _datastore_location(self, moid: str) -> tuple[str, str]:
        with self._lock:
            cached = self._datastores.get(moid)
        if cached is not None:
            return cached
        datastore = self.managed(vim.Datastore, moid)
        props = self.read(datastore, "name", "parent")
        if "name" not in props:
            raise VCenterError(VCenterErrorKind.NOT_FOUND, f"datastore {moid} does not exist")
        location = (self._datacenter_path(props.get("parent")), str(props["name"]))
        with self._lock:
            self._datastores[moid] = location
        return location

    def _datacenter_path(self, start: Any) -> str:
        """The inventory path of the datacenter above ``start`` (``F0/DC1``), as ``dcPath`` wants."""
        names: list[str] = []
        current = start
        in_datacenter = False
        for _ in range(_MAX_PARENT_DEPTH):
            if current is None:
                break
            props = self.read(current, "name", "parent")
            if isinstance(current, vim.Datacenter):
                in_datacenter = True
            parent = props.get("parent")
            if in_datacenter and parent is not None:  # the root folder has no parent and no place
                names.append(str(props.get("name", "")))
            current = parent
        if not in_datacenter:
            raise VCenterError(VCenterErrorKind.NOT_FOUND, "a datastore is not inside any datacenter")
        return "/".join(reversed(names))


def parse_datastore_path(path: str) -> tuple[str, str]:
    """Split ``[datastore] dir/file.vmdk`` into ``("datastore", "dir/file.vmdk")``."""
    text = path.strip()
    if not text.startswith("[") or "]" not in text:
        raise VCenterError(VCenterErrorKind.API_ERROR, f"{path!r} is not a datastore path")
    name, _, rest = text[1:].partition("]")
    return name, rest.strip()


def open_session(endpoint: VCenterEndpoint) -> VCenterSession:
    """Log in to ``endpoint``; the caller closes the session (or uses it as a context manager)."""
    stack = ExitStack()
    try:
        service_instance = stack.enter_context(connect(endpoint))
        return VCenterSession(endpoint, service_instance, stack)
    except BaseException as exc:
        stack.close()
        if isinstance(exc, VCenterError):
            raise
        if isinstance(exc, Exception):
            raise classify(exc, endpoint, connecting=True) from exc
        raise
