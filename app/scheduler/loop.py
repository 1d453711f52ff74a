"""The base of every background loop.

A loop runs ``run_once`` every ``interval`` seconds (with jitter, so replicas do not tick in
lockstep), logs what it did, and survives a failing iteration: one bad vCenter or a database
blip must not stop the service's housekeeping. Tests call ``run_once`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from abc import ABC, abstractmethod
from typing import ClassVar

log = logging.getLogger(__name__)


class LoopService(ABC):
    name: str = "loop"

    #: Loops running in this process (``run_forever``), for the metrics endpoint.
    running: ClassVar[weakref.WeakSet[LoopService]] = weakref.WeakSet()

    def __init__(self, interval_s: float, jitter: float = 0.1) -> None:
        self.interval_s = interval_s
        self.jitter = jitter
        self._stopping = asyncio.Event()
        #: How late the last iteration started against its schedule (a busy event loop or a
        #: slow previous iteration shows here), and how long it took.
        self.last_lag_s = 0.0
        self.last_duration_s = 0.0
        self.iterations = 0

    @abstractmethod
    async def run_once(self) -> None:
        """One iteration; must be safe to run again at any time (idempotent)."""

    async def run_forever(self) -> None:
        log.info("%s loop started (every %.0f s)", self.name, self.interval_s)
        LoopService.running.add(self)
        due = time.monotonic()
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self.last_lag_s = max(0.0, started - due)
                try:
                    await self.run_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("%s loop iteration failed; retrying next interval", self.name)
                self.iterations += 1
                self.last_duration_s = time.monotonic() - started
                delay = self.interval_s * (1 + random.uniform(-self.jitter, self.jitter))  # noqa: S311
                due = time.monotonic() + delay
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        finally:
            LoopService.running.discard(self)
        log.info("%s loop stopped", self.name)

    def stop(self) -> None:
        self._stopping.set()
