"""Proxy status from heartbeat times, with the configured thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

from app.clock import Clock
from app.domain.proxy_status import ProxyStatus, proxy_status


class Heartbeating(Protocol):
    """A proxy or guest agent, loaded whole or as the columns a read needs."""

    @property
    def last_heartbeat_at(self) -> datetime | None: ...


_STATUS_RANK = {ProxyStatus.ONLINE: 0, ProxyStatus.STALE: 1, ProxyStatus.OFFLINE: 2}


class ProxyLiveness:
    """Turns heartbeat times into statuses; ``best`` of several is what a host gets."""

    def __init__(self, clock: Clock, stale_after_s: float, offline_after_s: float) -> None:
        self.clock = clock
        self.stale_after = timedelta(seconds=stale_after_s)
        self.offline_after = timedelta(seconds=offline_after_s)

    def status(self, proxy: Heartbeating) -> ProxyStatus:
        return proxy_status(proxy.last_heartbeat_at, self.clock.now(), self.stale_after, self.offline_after)

    def best(self, proxies: Sequence[Heartbeating]) -> str:
        if not proxies:
            return "none"
        return min((self.status(p) for p in proxies), key=_STATUS_RANK.__getitem__).value

    @property
    def online_since(self) -> datetime:
        return self.clock.now() - self.stale_after
