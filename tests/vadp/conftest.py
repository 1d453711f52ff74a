"""Fixtures of the data-path tests: a fresh simulator per test, and sessions on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pyVmomi import vim

from app.vadp.session import VCenterSession, open_session
from app.vadp.types import VmHandle
from tests.support.vcsim import VcsimServer
from tests.support.vcsim_fixtures import VcsimFactory
from tests.vadp import reference


@pytest.fixture
def sim(vcsim_factory: VcsimFactory) -> VcsimServer:
    """A simulator of this test's own (anything that mutates: snapshots, disks, VMs)."""
    return vcsim_factory()


@pytest.fixture
def sim_session(sim: VcsimServer) -> Iterator[VCenterSession]:
    with open_session(reference.endpoint(sim)) as session:
        yield session


@pytest.fixture(scope="module")
def shared_session(vcsim: VcsimServer) -> Iterator[VCenterSession]:
    """A session on the shared, read-only simulator."""
    with open_session(reference.endpoint(vcsim)) as session:
        yield session


def handle_of(server: VcsimServer, name: str) -> VmHandle:
    with reference.session(server) as si:
        return VmHandle(reference.find(si, vim.VirtualMachine, name)._moId)
