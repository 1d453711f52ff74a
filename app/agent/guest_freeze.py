"""The proxy's side of an application-consistent snapshot: ask the guest agent to freeze, wait for
it, snapshot, release.

Waiting is bounded: a guest agent that is offline, slow or failing costs a crash-consistent
restore point (with a warning naming why), never the backup. The freeze counts only if the guest
reports that it held it until the release, i.e. for the whole snapshot.
"""

from __future__ import annotations

import logging
import time

from app.agent.client import AgentChannelError
from app.agent.runtime import JobRuntime
from app.contracts.agent import QuiesceStatus

log = logging.getLogger(__name__)

_TERMINAL = {"succeeded", "failed", "cancelled", "missed", "skipped"}
#: After the release, how long to wait for the guest to say it thawed (and whether it held).
THAW_REPORT_TIMEOUT_S = 30.0


class GuestFreeze:
    def __init__(self, runtime: JobRuntime, freeze_timeout_s: float, poll_s: float = 0.25) -> None:
        if runtime.service is None:
            raise ValueError("the job runtime has no service channel")
        self.runtime = runtime
        self.service = runtime.service
        self.freeze_timeout_s = freeze_timeout_s
        self.poll_s = poll_s
        self.requested = False
        self.frozen = False
        # The guest agent froze nothing (no databases or hooks configured there): the snapshot's
        # own quiescing, not the agent's freeze, decides the point's consistency.
        self.froze_nothing = False

    def freeze(self) -> bool:
        """Ask for the freeze and wait until the guest reports it (True), or give up (False)."""
        runtime = self.runtime
        try:
            status = self.service.quiesce("request")
            self.requested = True
            deadline = time.monotonic() + self.freeze_timeout_s
            while not status.frozen:
                if status.state in _TERMINAL:
                    runtime.warn(
                        f"the guest agent could not freeze its applications: {status.error or status.state}"
                    )
                    return False
                if time.monotonic() >= deadline:
                    why = (
                        "it has not taken the request: is it running?"
                        if status.state == "queued"
                        else "still freezing"
                    )
                    runtime.warn(
                        f"the guest agent did not freeze its applications in {self.freeze_timeout_s:.0f} s "
                        f"({why}); the snapshot is crash-consistent"
                    )
                    return False
                if runtime.cancel.wait(self.poll_s):
                    return False
                status = self.service.quiesce("status")
        except (AgentChannelError, TimeoutError) as exc:
            runtime.warn(
                f"could not coordinate with the guest agent ({exc}); the snapshot is crash-consistent"
            )
            return False
        self.frozen = True
        return True

    def release(self) -> bool:
        """Let the guest thaw (always call after ``freeze``); True if the freeze held until now."""
        if not self.requested:
            return False
        try:
            status = self.service.quiesce("release")
            deadline = time.monotonic() + THAW_REPORT_TIMEOUT_S
            while status.state not in _TERMINAL and time.monotonic() < deadline:
                time.sleep(self.poll_s)
                status = self.service.quiesce("status")
        except (AgentChannelError, TimeoutError) as exc:
            self.runtime.warn(f"could not confirm the guest agent's thaw ({exc})")
            return False
        return self._held(status)

    def _held(self, status: QuiesceStatus) -> bool:
        if not self.frozen:
            return False
        if status.result is not None and not status.result.engines:
            self.froze_nothing = True
            return False
        if status.result is None or not status.result.held_until_release:
            self.runtime.warn(
                "the guest agent thawed before the snapshot was complete "
                f"({status.error or status.state}); the snapshot is crash-consistent"
            )
            return False
        return True
