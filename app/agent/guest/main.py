"""Running the guest agent (``vmrecovery guest-agent``) inside a VM."""

from __future__ import annotations

import asyncio
import logging
import signal

from app.agent.apps.errors import AppError
from app.agent.apps.mysql_backup import list_mysql_databases
from app.agent.apps.postgres_backup import list_postgres_databases
from app.agent.apps.postgres_client import Psql
from app.agent.apps.quiesce import HookScripts
from app.agent.client import AgentClient
from app.agent.guest.config import GuestConfig
from app.agent.guest.quiesce import QuiesceRunner
from app.agent.guest.runners import AppBackupRunner, AppRestoreRunner
from app.agent.repositories import RepositoryCache
from app.agent.runtime import Runner
from app.agent.worker import ProxyAgent
from app.contracts.agent import ApplicationInstance

log = logging.getLogger(__name__)

#: Two slots: a quiesce for an image backup must be taken even while an application backup runs.
GUEST_WORKERS = 2


def describe(config: GuestConfig) -> list[ApplicationInstance]:
    """What the agent can protect, for the service to show (never raises: errors are reported)."""
    found: list[ApplicationInstance] = []
    for name, pg in sorted(config.postgresql.items()):
        try:
            version, _ = Psql(pg, timeout_s=30).server_version()
            found.append(
                ApplicationInstance(
                    engine="postgresql", instance=name, version=version, databases=list_postgres_databases(pg)
                )
            )
        except AppError as exc:
            found.append(ApplicationInstance(engine="postgresql", instance=name, error=str(exc)[:2000]))
    for name, my in sorted(config.mysql.items()):
        try:
            found.append(
                ApplicationInstance(engine="mysql", instance=name, databases=list_mysql_databases(my))
            )
        except AppError as exc:
            found.append(ApplicationInstance(engine="mysql", instance=name, error=str(exc)[:2000]))
    return found


def build_guest_agent(server: str, token: str, config: GuestConfig, **options: float) -> ProxyAgent:
    repositories = RepositoryCache()
    runners: dict[str, Runner] = {
        "app_backup": AppBackupRunner(config, repositories),
        "app_restore": AppRestoreRunner(config, repositories),
        "quiesce": QuiesceRunner(config),
    }
    return ProxyAgent(
        AgentClient(server, token),
        runners,
        workers=GUEST_WORKERS,
        describe=lambda: describe(config),
        **options,  # type: ignore[arg-type]
    )


async def run_guest_agent(server: str, token: str, config: GuestConfig) -> None:
    """Run until SIGTERM/SIGINT; a running dump is stopped and its job retried later."""
    hooks = config.hooks
    if hooks.post_thaw:  # a post-thaw an earlier run owed (killed while the guest was frozen)
        scripts = HookScripts(None, hooks.post_thaw, timeout_s=hooks.timeout_s, thaw_marker=hooks.thaw_marker)
        await asyncio.to_thread(scripts.recover_thaw)
    agent = build_guest_agent(server, token, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    finally:
        await agent.client.close()
        log.info("guest agent stopped")
