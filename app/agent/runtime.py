"""What a job runner, working in a thread, shares with the agent's event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from app.contracts.agent import CompleteRequest, JobAssignment, ProgressReport, QuiesceStatus


class ServiceCalls(Protocol):
    """Calls a runner thread makes to the service during a job, answered synchronously."""

    def quiesce(self, action: str) -> QuiesceStatus: ...


#: Longest phase text the service takes; longer ones (a long path in it) are cut, not refused.
PHASE_MAX = 40


class CancelReason:
    USER = "user"
    SHUTDOWN = "shutdown"
    LEASE_LOST = "lease lost"


@dataclass
class JobRuntime:
    """Progress goes out through :meth:`report`; cancellation comes in through ``cancel``.

    Runners check ``cancel`` between steps (and pass it to long loops) and must still clean
    up (remove their snapshot) when it is set.
    """

    assignment: JobAssignment
    cancel: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None
    #: Quiesce jobs: set when the proxy released the freeze (the snapshot is taken).
    release: threading.Event = field(default_factory=threading.Event)
    #: Set by the agent: calls to the service from the runner's thread.
    service: ServiceCalls | None = None
    #: Set by the agent: makes the next progress report go out now rather than at its interval.
    wake: Callable[[], None] | None = None
    #: Set by the agent when the runner returned: progress reports stop.
    finished: bool = False
    warnings: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _latest: ProgressReport = field(default_factory=lambda: ProgressReport(phase="starting"))
    _dirty: bool = True

    def report(
        self,
        phase: str,
        *,
        bytes_total: int | None = None,
        bytes_read: int | None = None,
        bytes_new: int | None = None,
        bytes_stored: int | None = None,
        urgent: bool = False,
    ) -> None:
        """Record progress; ``urgent`` sends it at once (a guest reporting "frozen" is waited for)."""
        with self._lock:
            previous = self._latest
            self._latest = ProgressReport(
                phase=phase[:PHASE_MAX],
                bytes_total=previous.bytes_total if bytes_total is None else bytes_total,
                bytes_read=previous.bytes_read if bytes_read is None else bytes_read,
                bytes_new=previous.bytes_new if bytes_new is None else bytes_new,
                bytes_stored=previous.bytes_stored if bytes_stored is None else bytes_stored,
                warnings=list(self.warnings),
            )
            self._dirty = True
        if urgent and self.wake is not None:
            self.wake()

    def warn(self, message: str) -> None:
        with self._lock:
            if message not in self.warnings:
                self.warnings.append(message)
            self._dirty = True

    def latest(self) -> ProgressReport:
        with self._lock:
            self._dirty = False
            return self._latest.model_copy(update={"warnings": list(self.warnings)})

    def request_cancel(self, reason: str) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self.cancel.set()


class Runner(Protocol):
    """Runs one kind of job, blocking, in a worker thread; never raises for job failures
    it understands (it returns a failed CompleteRequest with an actionable message)."""

    def run(self, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest: ...
