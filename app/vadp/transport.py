"""How disk data is read from a snapshot: the transport protocol and a registry of transports.

VMware offers several ways to get at a snapshot's disk: the datastore file over HTTP
(portable, works everywhere the ``/folder`` service does), NBD/NBDSSL through the host,
hot-add (the proxy VM mounts the snapshot's disk) and SAN. Each is a :class:`DiskTransport`
registered under a name; the agent picks one by name (a proxy setting, possibly with a
fallback order) and never cares which it got.

A :class:`DiskReader` is used from several threads at once: the runner reads chunks in
parallel, so ``read_at`` must be thread-safe and must return exactly the bytes asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from app.vadp.session import VCenterSession
from app.vadp.types import SnapshotHandle, VmDisk, VmHandle


class DiskReader(Protocol):
    @property
    def size(self) -> int:
        """The disk's size in bytes (its capacity as of the snapshot)."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset`` (thread-safe); raises ``DiskIOError``."""
        ...

    def close(self) -> None: ...


class DiskTransport(Protocol):
    name: str

    def open(
        self, session: VCenterSession, vm: VmHandle, snapshot: SnapshotHandle, disk: VmDisk | int
    ) -> DiskReader:
        """A reader of ``disk`` (a disk of ``vm``, or its key) as it was when ``snapshot`` was taken."""
        ...


TransportFactory = Callable[[], DiskTransport]

_registry: dict[str, TransportFactory] = {}
_registry_lock = threading.Lock()


def register_transport(name: str, factory: TransportFactory) -> None:
    """Make a transport available by ``name`` (``datastore-http``; later ``nbd``, ``hotadd``...)."""
    with _registry_lock:
        _registry[name] = factory


def transport_names() -> list[str]:
    _register_builtins()
    with _registry_lock:
        return sorted(_registry)


def get_transport(name: str) -> DiskTransport:
    """A new transport instance registered as ``name``; ``KeyError`` lists the known names."""
    _register_builtins()
    with _registry_lock:
        factory = _registry.get(name)
        known = sorted(_registry)
    if factory is None:
        raise KeyError(f"no disk transport named {name!r} (known: {', '.join(known)})")
    return factory()


def _register_builtins() -> None:
    # Imported here: the built-in transports import this module for the protocols.
    from app.vadp.datastore_http import DatastoreHttpTransport

    with _registry_lock:
        _registry.setdefault(DatastoreHttpTransport.name, DatastoreHttpTransport)
