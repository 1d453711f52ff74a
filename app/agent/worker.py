"""The proxy agent's main loop: heartbeat, claim, run jobs in threads, report, stop cleanly.

Runners do the blocking work (pyvmomi, HTTP ranges, hashing, compression) in worker threads;
this loop only talks to the service. Leases are kept alive by progress reports; a job whose
lease is lost is cancelled locally and its result is not reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import Awaitable, Callable

from app import __version__
from app.agent.client import AgentClient, FatalChannelError, LeaseLost, TransientChannelError
from app.agent.runtime import CancelReason, JobRuntime, Runner
from app.contracts.agent import (
    ApplicationInstance,
    CleanupTargets,
    CompleteRequest,
    Heartbeat,
    JobAssignment,
    QuiesceStatus,
)

log = logging.getLogger(__name__)

Cleanup = Callable[[CleanupTargets], list[str]]
#: Guest agents: what they can protect in their VM, reported with heartbeats (blocking; run in a thread).
Describe = Callable[[], list[ApplicationInstance]]
#: How often a guest agent looks again at its VM's databases.
DESCRIBE_INTERVAL_S = 300.0


class ProxyAgent:
    def __init__(
        self,
        client: AgentClient,
        runners: dict[str, Runner],
        *,
        workers: int = 2,
        cleanup: Cleanup | None = None,
        heartbeat_interval_s: float = 15.0,
        claim_wait_s: float = 20.0,
        shutdown_grace_s: float = 60.0,
        hostname: str | None = None,
        describe: Describe | None = None,
    ) -> None:
        self.client = client
        self.runners = runners
        self.workers = workers
        self.cleanup = cleanup
        self.heartbeat_interval_s = heartbeat_interval_s
        self.claim_wait_s = claim_wait_s
        self.shutdown_grace_s = shutdown_grace_s
        self.hostname = hostname or socket.gethostname()
        self.describe = describe
        self._described_at: float | None = None
        self._stopping = asyncio.Event()
        self._running: dict[uuid.UUID, JobRuntime] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(workers)
        self._claiming: asyncio.Task[None] | None = None

    @property
    def running_jobs(self) -> list[uuid.UUID]:
        return list(self._running)

    def stop(self) -> None:
        """Stop claiming and cancel running jobs (they clean up, then fail as retryable)."""
        if not self._stopping.is_set():
            log.info("agent stopping: %d job(s) running", len(self._running))
        self._stopping.set()
        for runtime in self._running.values():
            runtime.request_cancel(CancelReason.SHUTDOWN)
        if self._claiming is not None:
            # Do not wait out a long-poll; a job claimed in that instant is retried after
            # its lease expires.
            self._claiming.cancel()

    async def run(self) -> None:
        await self._retry_until_stopped(self._startup_cleanup, "clean-up of left-over snapshots")
        heartbeat = asyncio.create_task(self._heartbeat_loop(), name="heartbeat")
        self._claiming = asyncio.create_task(self._claim_loop(), name="claim")
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await self._claiming
        finally:
            if self._tasks:
                _done, pending = await asyncio.wait(self._tasks, timeout=self.shutdown_grace_s)
                for task in pending:
                    task.cancel()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)

    async def _retry_until_stopped(self, step: Callable[[], Awaitable[None]], what: str) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                await step()
                return
            except TransientChannelError as exc:
                log.warning("%s: %s; retrying in %.0f s", what, exc, delay)
            await self._sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _startup_cleanup(self) -> None:
        """Remove the snapshots a previous run of this proxy left behind (it may have crashed)."""
        if self.cleanup is None:
            return
        targets = await self.client.cleanup_targets()
        if not targets.targets:
            return
        removed = await asyncio.to_thread(self.cleanup, targets)
        for name in removed:
            log.warning("removed snapshot %s left behind by an earlier run of this proxy", name)

    async def _applications(self) -> list[ApplicationInstance] | None:
        """A fresh description every DESCRIBE_INTERVAL_S (None in between: the service keeps the last)."""
        now = asyncio.get_running_loop().time()
        if self.describe is None or (
            self._described_at is not None and now - self._described_at < DESCRIBE_INTERVAL_S
        ):
            return None
        self._described_at = now
        return await asyncio.to_thread(self.describe)

    async def _heartbeat_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.client.heartbeat(
                    Heartbeat(
                        agent_version=__version__,
                        hostname=self.hostname,
                        running_jobs=len(self._running),
                        applications=await self._applications(),
                    )
                )
            except (TransientChannelError, LeaseLost) as exc:
                log.warning("heartbeat failed: %s", exc)
            except FatalChannelError as exc:
                log.error("heartbeat refused: %s", exc)
            await self._sleep(self.heartbeat_interval_s)

    async def _claim_loop(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            await self._slots.acquire()
            if self._stopping.is_set():
                self._slots.release()
                break
            capacity = max(1, self.workers - len(self._running))
            try:
                jobs = await self.client.claim(capacity, self.claim_wait_s)
                delay = 1.0
            except (TransientChannelError, FatalChannelError, LeaseLost) as exc:
                self._slots.release()
                log.warning("claim failed: %s; retrying in %.0f s", exc, delay)
                await self._sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            if not jobs:
                self._slots.release()
                continue
            for index, assignment in enumerate(jobs):
                if index > 0:
                    await self._slots.acquire()
                task = asyncio.create_task(self._run_job(assignment), name=f"job-{assignment.job_id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _run_job(self, assignment: JobAssignment) -> None:
        runtime = JobRuntime(assignment=assignment)
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def wake_reporter() -> None:
            loop.call_soon_threadsafe(wake.set)

        runtime.wake = wake_reporter
        runtime.service = _ServiceCalls(self.client, loop, assignment.job_id, assignment.attempt)
        self._running[assignment.job_id] = runtime
        log.info(
            "job %s: %s of VM %s (attempt %d)",
            assignment.job_id,
            assignment.kind,
            assignment.vm.name,
            assignment.attempt,
        )
        try:
            runner = self.runners.get(assignment.kind)
            reporter = asyncio.create_task(self._report_loop(runtime, wake))
            try:
                if runner is None:
                    result = CompleteRequest(
                        outcome="failed",
                        error=f"this proxy cannot run {assignment.kind} jobs",
                        error_kind="permanent",
                    )
                else:
                    result = await asyncio.to_thread(self._run_safely, runner, assignment, runtime)
            finally:
                # The loop ends by itself at its next wake-up; cancel() alone can be lost when it
                # races with that wake-up, and the job would then never be reported.
                runtime.finished = True
                wake.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait([reporter], timeout=10)
                reporter.cancel()
                await asyncio.gather(reporter, return_exceptions=True)
            if runtime.cancel_reason == CancelReason.LEASE_LOST:
                log.warning("job %s: lease lost; not reporting its result", assignment.job_id)
                return
            if runtime.cancel_reason == CancelReason.SHUTDOWN and result.outcome != "succeeded":
                result = CompleteRequest(
                    outcome="failed",
                    error="the proxy was stopped while the job ran; it will be retried",
                    error_kind="transient",
                    warnings=result.warnings,
                )
            if result.progress is None:
                result = result.model_copy(update={"progress": runtime.latest()})
            await self._complete(assignment, result)
        finally:
            self._running.pop(assignment.job_id, None)
            self._slots.release()

    @staticmethod
    def _run_safely(runner: Runner, assignment: JobAssignment, runtime: JobRuntime) -> CompleteRequest:
        try:
            return runner.run(assignment, runtime)
        except Exception as exc:  # a runner bug must not kill the agent; report it
            log.exception("job %s: runner crashed", assignment.job_id)
            return CompleteRequest(
                outcome="failed",
                error=f"internal agent error: {type(exc).__name__}: {exc}",
                error_kind="transient",
                warnings=list(runtime.warnings),
            )

    async def _report_loop(self, runtime: JobRuntime, wake: asyncio.Event) -> None:
        interval = max(0.5, min(5.0, runtime.assignment.lease_s / 4))
        while True:
            # asyncio.wait, not wait_for: wait_for may swallow a cancellation that coincides with
            # the event being set (CPython 3.11).
            waiter = asyncio.ensure_future(wake.wait())
            try:
                await asyncio.wait([waiter], timeout=interval)
            finally:
                waiter.cancel()
            if runtime.finished:
                return
            wake.clear()
            try:
                ack = await self.client.progress(
                    runtime.assignment.job_id, runtime.latest(), runtime.assignment.attempt
                )
            except LeaseLost:
                runtime.request_cancel(CancelReason.LEASE_LOST)
                return
            except (TransientChannelError, FatalChannelError) as exc:
                log.warning("job %s: progress report failed: %s", runtime.assignment.job_id, exc)
                continue
            if ack.cancel_requested:
                runtime.request_cancel(CancelReason.USER)
            if ack.release_requested:
                runtime.release.set()

    async def _complete(self, assignment: JobAssignment, result: CompleteRequest) -> None:
        delay = 1.0
        for _ in range(8):
            try:
                await self.client.complete(assignment.job_id, result, assignment.attempt)
                log.info("job %s: %s", assignment.job_id, result.outcome)
                return
            except LeaseLost as exc:
                log.warning("job %s: result refused (%s)", assignment.job_id, exc)
                return
            except FatalChannelError as exc:
                log.error("job %s: result refused: %s", assignment.job_id, exc)
                return
            except TransientChannelError as exc:
                log.warning("job %s: reporting the result failed (%s); retrying", assignment.job_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
        log.error(
            "job %s: could not report the result; the lease will expire and it will be retried",
            assignment.job_id,
        )

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)


class _ServiceCalls:
    """Service calls for a runner thread: run on the agent's event loop, waited for in the thread."""

    def __init__(
        self, client: AgentClient, loop: asyncio.AbstractEventLoop, job_id: uuid.UUID, attempt: int
    ) -> None:
        self._client = client
        self._loop = loop
        self._job_id = job_id
        self._attempt = attempt

    def quiesce(self, action: str) -> QuiesceStatus:
        future = asyncio.run_coroutine_threadsafe(
            self._client.quiesce(self._job_id, action, self._attempt), self._loop
        )
        return future.result(timeout=60)
