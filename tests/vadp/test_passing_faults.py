"""A vCenter fault of a condition that clears by itself (another task on the VM: a vMotion, a DRS
move, a consolidation) makes the job retry; other faults stay permanent."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import VCenterSession

pytestmark = pytest.mark.vcsim


def test_another_task_in_progress_is_transient(sim_session: VCenterSession) -> None:
    with pytest.raises(VCenterError) as raised, sim_session.guard("taking a snapshot"):
        raise vim.fault.TaskInProgress(msg="Another task is already in progress.")
    assert raised.value.transient and raised.value.kind is VCenterErrorKind.INVALID_STATE


def test_an_invalid_power_state_stays_permanent(sim_session: VCenterSession) -> None:
    with pytest.raises(VCenterError) as raised, sim_session.guard("restoring"):
        raise vim.fault.InvalidPowerState(msg="The VM is powered on.")
    assert not raised.value.transient
