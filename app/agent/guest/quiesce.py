"""The guest agent's quiesce job: freeze the VM's applications, hold until released, thaw.

The freeze is held until the proxy says the snapshot is taken (``release_requested`` on a progress
acknowledgement), the job is cancelled, or ``hold_max_s`` passes, whichever comes first. The result
says whether it held until the release: only then is the snapshot application-consistent.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from app.agent.apps.errors import AppError
from app.agent.apps.quiesce import HookScripts, MysqlReadLock, PostgresCheckpoint, Quiesce, Quiescer
from app.agent.guest.config import GuestConfig
from app.agent.runtime import JobRuntime
from app.contracts.agent import CompleteRequest, JobAssignment, QuiesceResult

#: While frozen, the agent asks the service this often whether the snapshot is done.
RELEASE_POLL_S = 0.5


class QuiesceRunner:
    def __init__(self, config: GuestConfig) -> None:
        self.config = config

    def steps(self, hold_max_s: float) -> list[Quiescer]:
        """Scripts first (like VMware Tools' pre-freeze), then each database; thawed in reverse."""
        steps: list[Quiescer] = []
        hooks = self.config.hooks
        if hooks.pre_freeze or hooks.post_thaw:
            steps.append(
                HookScripts(
                    hooks.pre_freeze,
                    hooks.post_thaw,
                    timeout_s=hooks.timeout_s,
                    thaw_marker=hooks.thaw_marker,
                )
            )
        steps.extend(PostgresCheckpoint(conn) for conn in self.config.postgresql.values())
        steps.extend(
            MysqlReadLock(conn, hold_timeout_s=max(1, int(hold_max_s))) for conn in self.config.mysql.values()
        )
        return steps

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        params = assignment.quiesce
        assert params is not None
        steps = self.steps(params.hold_max_s)
        quiesce = Quiesce(steps)
        try:
            quiesce.freeze()
        except AppError as exc:
            return CompleteRequest(
                outcome="failed",
                error=f"freeze failed: {exc}",
                error_kind="permanent",
                warnings=runtime.warnings,
            )
        frozen_at = datetime.now(UTC)
        deadline = time.monotonic() + params.hold_max_s
        released = False
        while not runtime.cancel.is_set() and time.monotonic() < deadline:
            runtime.report("frozen", urgent=True)  # also asks the service whether to release
            if runtime.release.wait(RELEASE_POLL_S):
                released = True
                break
        if not released:
            runtime.warn(
                "thawed before the proxy released the freeze "
                + (
                    "(cancelled)"
                    if runtime.cancel.is_set()
                    else f"(held the maximum {params.hold_max_s:.0f} s)"
                )
            )
        held = released
        try:
            quiesce.thaw()
        except AppError as exc:
            runtime.warn(f"thaw: {exc}")
            held = False  # e.g. the MariaDB lock was gone before the thaw: it did not hold throughout
        runtime.report("thawed", urgent=True)
        return CompleteRequest(
            outcome="succeeded",
            quiesce=QuiesceResult(
                frozen_at=frozen_at,
                thawed_at=datetime.now(UTC),
                held_until_release=held,
                engines=[step.name for step in steps],
            ),
            warnings=runtime.warnings,
        )
