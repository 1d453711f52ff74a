"""pytest plugin: vCenter simulators for tests that talk to a vCenter.

``vcsim`` and ``vcsim_tls`` are shared by the whole session, so tests using them must not
change the simulated inventory; a test that mutates (powers off a VM, enforces credentials,
...) starts its own instance with ``vcsim_factory``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.vcsim import VcsimServer, build_vcsim

VcsimFactory = Callable[..., VcsimServer]


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    """The simulator binary, built once per session (and cached across sessions)."""
    return build_vcsim()


@pytest.fixture(scope="session")
def vcsim(vcsim_binary: Path) -> Iterator[VcsimServer]:
    """One plain-http simulator for the whole session; read-only use only."""
    with VcsimServer(vcsim_binary).start() as server:
        yield server


@pytest.fixture(scope="session")
def vcsim_tls(vcsim_binary: Path) -> Iterator[VcsimServer]:
    """One https simulator (self-signed certificate) for the whole session; read-only use."""
    with VcsimServer(vcsim_binary).start(tls=True) as server:
        yield server


@pytest.fixture
def vcsim_factory(vcsim_binary: Path) -> Iterator[VcsimFactory]:
    """Start dedicated simulators (``factory(tls=False, extra_args=())``), stopped after the test."""
    servers: list[VcsimServer] = []

    def start(
        tls: bool = False, extra_args: Sequence[str] = (), datastore_dir: Path | None = None
    ) -> VcsimServer:
        server = VcsimServer(vcsim_binary)
        servers.append(server)
        return server.start(tls=tls, extra_args=extra_args, datastore_dir=datastore_dir)

    yield start
    for server in servers:
        server.stop()
