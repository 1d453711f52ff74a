"""The ``/metrics`` exposition: catalog figures read at scrape time, plus this process's loops.

Catalog figures (jobs, durations, bytes, breaches, restores, proxies) come from the shared
catalog, so every replica answers the same; loop lag is per process (each replica runs its
own loops), labelled by loop name.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.clock import Clock
from app.compliance.clocks import clocks_of
from app.compliance.repository import ComplianceRepository
from app.domain.proxy_status import ProxyStatus, proxy_status
from app.metrics.repository import DurationStats, MetricsRepository
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)

DURATION_BOUNDS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0)
RECENT = timedelta(hours=24)
CLOCK_STATES = ("on_track", "at_risk", "breached")


@dataclass
class CatalogSnapshot:
    up: bool = False
    jobs: list[tuple[str, str, int]] = field(default_factory=list)
    durations: list[DurationStats] = field(default_factory=list)
    points: int = 0
    points_bytes_stored: int = 0
    open_breaches: dict[str, int] = field(default_factory=dict)
    #: (clock, status) → active restores
    restore_clocks: Counter[tuple[str, str]] = field(default_factory=Counter)
    proxies: Counter[str] = field(default_factory=Counter)


async def read_catalog(
    sessionmaker: async_sessionmaker[AsyncSession],
    clock: Clock,
    stale_after: timedelta,
    offline_after: timedelta,
) -> CatalogSnapshot:
    snap = CatalogSnapshot()
    now = clock.now()
    try:
        async with sessionmaker() as session:
            repo = MetricsRepository(session)
            snap.jobs = await repo.jobs_by_state()
            snap.durations = await repo.finished_since(now - RECENT, DURATION_BOUNDS)
            snap.points, snap.points_bytes_stored = await repo.restore_points_bytes()
            snap.open_breaches = await repo.open_breaches_by_cause()
            for heartbeat in await repo.proxy_heartbeats():
                snap.proxies[proxy_status(heartbeat, now, stale_after, offline_after).value] += 1
            for restore, _, rto, _ in await ComplianceRepository(session).restores_with_rto(
                None, active_only=True
            ):
                clocks = clocks_of(restore, rto, now)
                snap.restore_clocks["initiation", clocks.initiation.status.value] += 1
                snap.restore_clocks["completion", clocks.completion.status.value] += 1
            await session.rollback()
        snap.up = True
    except Exception:
        log.exception("metrics: reading the catalog failed")
    return snap


class CatalogCollector(Collector):
    def __init__(self, snap: CatalogSnapshot, loops: list[LoopService]) -> None:
        self.snap = snap
        self.loops = loops

    def collect(self) -> Iterator[Metric]:
        snap = self.snap
        up = GaugeMetricFamily("vmr_catalog_up", "Whether the catalog could be read for this scrape.")
        up.add_metric([], 1.0 if snap.up else 0.0)
        yield up
        yield from self._loops()
        if not snap.up:
            return
        jobs = GaugeMetricFamily(
            "vmr_jobs", "Jobs in the catalog by kind and state.", labels=["kind", "state"]
        )
        for kind, state, n in sorted(snap.jobs):
            jobs.add_metric([kind, state], n)
        yield jobs

        durations = GaugeHistogramMetricFamily(
            "vmr_job_duration_seconds",
            "Duration (claim to end) of jobs that ended in the last 24 hours, by kind.",
            labels=["kind"],
        )
        read = GaugeMetricFamily(
            "vmr_job_bytes_read_24h",
            "Disk bytes read by jobs that ended in the last 24 hours.",
            labels=["kind"],
        )
        stored = GaugeMetricFamily(
            "vmr_job_bytes_stored_24h",
            "Bytes written to the repository by jobs that ended in the last 24 hours.",
            labels=["kind"],
        )
        for d in sorted(snap.durations, key=lambda d: d.kind):
            buckets = [(str(float(b)), float(c)) for b, c in zip(DURATION_BOUNDS, d.cumulative, strict=True)]
            buckets.append(("+Inf", float(d.count)))
            durations.add_metric([d.kind], buckets, d.seconds)
            read.add_metric([d.kind], d.bytes_read)
            stored.add_metric([d.kind], d.bytes_stored)
        yield durations
        yield read
        yield stored

        points = GaugeMetricFamily("vmr_restore_points", "Restore points in the catalog.")
        points.add_metric([], snap.points)
        yield points
        points_bytes = GaugeMetricFamily(
            "vmr_restore_points_stored_bytes",
            "Bytes stored in the repository by the restore points in the catalog.",
        )
        points_bytes.add_metric([], snap.points_bytes_stored)
        yield points_bytes

        breaches = GaugeMetricFamily("vmr_rpo_breaches_open", "Open RPO breaches by cause.", labels=["cause"])
        for cause, n in sorted(snap.open_breaches.items()):
            breaches.add_metric([cause], n)
        yield breaches
        breaches_total = GaugeMetricFamily("vmr_rpo_breaches_open_total", "Open RPO breaches.")
        breaches_total.add_metric([], sum(snap.open_breaches.values()))
        yield breaches_total

        clocks = GaugeMetricFamily(
            "vmr_restores_sla",
            "Restores not yet ended, by SLA clock (initiation, completion) and its status.",
            labels=["clock", "status"],
        )
        for name in ("initiation", "completion"):
            for status in CLOCK_STATES:
                clocks.add_metric([name, status], snap.restore_clocks[name, status])
        yield clocks
        at_risk = GaugeMetricFamily(
            "vmr_restores_at_risk", "Restores not yet ended with an SLA clock past 80% of its window."
        )
        at_risk.add_metric(
            [], snap.restore_clocks["initiation", "at_risk"] + snap.restore_clocks["completion", "at_risk"]
        )
        yield at_risk

        proxies = GaugeMetricFamily("vmr_proxies", "Registered proxies by status.", labels=["status"])
        for status in ProxyStatus:
            proxies.add_metric([status.value], snap.proxies[status.value])
        yield proxies
        online = GaugeMetricFamily("vmr_proxies_online", "Proxies whose last heartbeat is recent.")
        online.add_metric([], snap.proxies[ProxyStatus.ONLINE.value])
        yield online

    def _loops(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(
            "vmr_scheduler_loop_lag_seconds",
            "How late the last iteration of each background loop of this process started.",
            labels=["loop"],
        )
        duration = GaugeMetricFamily(
            "vmr_scheduler_loop_duration_seconds",
            "How long the last iteration of each background loop of this process took.",
            labels=["loop"],
        )
        iterations = GaugeMetricFamily(
            "vmr_scheduler_loop_iterations",
            "Iterations each background loop of this process ran.",
            labels=["loop"],
        )
        for loop in sorted(self.loops, key=lambda item: item.name):
            lag.add_metric([loop.name], loop.last_lag_s)
            duration.add_metric([loop.name], loop.last_duration_s)
            iterations.add_metric([loop.name], loop.iterations)
        yield lag
        yield duration
        yield iterations


def render(snap: CatalogSnapshot, loops: list[LoopService] | None = None) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CatalogCollector(snap, list(LoopService.running) if loops is None else loops))
    return generate_latest(registry)
