"""Whether a proxy is alive, from the time of its last heartbeat."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum


class ProxyStatus(StrEnum):
    ONLINE = "online"
    STALE = "stale"
    OFFLINE = "offline"


def proxy_status(
    last_heartbeat_at: datetime | None, now: datetime, stale_after: timedelta, offline_after: timedelta
) -> ProxyStatus:
    if last_heartbeat_at is None:
        return ProxyStatus.OFFLINE
    age = now - last_heartbeat_at
    if age <= stale_after:
        return ProxyStatus.ONLINE
    if age <= offline_after:
        return ProxyStatus.STALE
    return ProxyStatus.OFFLINE
