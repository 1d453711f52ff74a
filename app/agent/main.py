"""Running a proxy agent: as its own process (``vmrecovery proxy``) or inside ``serve``."""

from __future__ import annotations

import asyncio
import logging
import signal

from app.agent.cleanup import remove_leftover_snapshots
from app.agent.client import AgentClient
from app.agent.runners import build_runners
from app.agent.worker import ProxyAgent

log = logging.getLogger(__name__)


def build_agent(server: str, token: str, workers: int, **options: float) -> ProxyAgent:
    return ProxyAgent(
        AgentClient(server, token),
        build_runners(),
        workers=workers,
        cleanup=remove_leftover_snapshots,
        **options,  # type: ignore[arg-type]
    )


async def run_proxy(server: str, token: str, workers: int) -> None:
    """Run until SIGTERM/SIGINT, then stop cleanly: running jobs are cancelled, their
    snapshots removed, and they are reported as failed-to-be-retried."""
    agent = build_agent(server, token, workers)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    finally:
        await agent.client.close()
        log.info("proxy stopped")
