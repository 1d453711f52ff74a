"""Removes a snapshot a lost proxy may have left on a VM (queued by the reaper)."""

from __future__ import annotations

from app.agent.cleanup import endpoint_of
from app.agent.runtime import JobRuntime
from app.contracts.agent import CompleteRequest, JobAssignment
from app.vadp.errors import VCenterError, VCenterErrorKind
from app.vadp.session import open_session
from app.vadp.snapshots import remove_snapshots_named
from app.vadp.vms import find_vm


class SnapshotCleanupRunner:
    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        assert assignment.cleanup is not None
        name = assignment.cleanup.snapshot_name
        runtime.report("removing snapshot")
        try:
            with open_session(endpoint_of(assignment.vcenter_access())) as session:
                vm = find_vm(session, assignment.vm.instance_uuid)
                removed = remove_snapshots_named(session, vm.handle, name)
        except VCenterError as exc:
            if exc.kind is VCenterErrorKind.NOT_FOUND:
                return CompleteRequest(
                    outcome="succeeded", warnings=["the VM no longer exists; nothing to clean up"]
                )
            kind = "transient" if exc.transient else "permanent"
            return CompleteRequest(outcome="failed", error=exc.message, error_kind=kind)
        note = f"removed snapshot {name}" if removed else f"no snapshot {name} was left on the VM"
        return CompleteRequest(outcome="succeeded", warnings=[note])
