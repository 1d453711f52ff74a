"""The ``vmrecovery`` command line."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from app import __version__
from app.settings import Settings

cli = typer.Typer(
    name="vmrecovery",
    help="VM Recovery: backup and recovery for VMware vSphere. Configure with VMR_* variables.",
    no_args_is_help=True,
    add_completion=False,
)


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One line per HTTP request (every disk range read) drowns what matters.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLevelName(level.upper())))


@cli.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (VMR_HOST, default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (VMR_PORT, default 8080).")] = None,
    no_loops: Annotated[
        bool, typer.Option("--no-loops", help="Do not run background loops (inventory refresh) here.")
    ] = False,
    no_embedded_proxy: Annotated[
        bool,
        typer.Option("--no-embedded-proxy", help="Do not run the built-in proxy (split deployments)."),
    ] = False,
) -> None:
    """Run the API service.

    With no configuration it keeps everything under ./var (SQLite catalog, secret key) and
    migrates the catalog itself. With VMR_DATABASE_URL pointing at PostgreSQL, run
    'vmrecovery migrate' first (or set VMR_AUTO_MIGRATE=true).
    """
    import uvicorn

    from app.main import create_app

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if no_loops:
        overrides["run_loops"] = False
    if no_embedded_proxy:
        overrides["embedded_proxy"] = False
    settings = Settings(**overrides)  # type: ignore[arg-type]
    _logging(settings.log_level)
    app = create_app(settings)

    class DrainingServer(uvicorn.Server):
        """Tells the app it is going down before uvicorn waits for open connections, so
        that agents' long-polls end at once instead of holding the shutdown."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            loop = asyncio.get_event_loop()
            loop.call_soon_threadsafe(app.state.draining.set)
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(), proxy_headers=False
    )
    DrainingServer(config).run()


@cli.command()
def scheduler() -> None:
    """Run the background loops alone (planner, reaper, inventory refresh, …), no API.

    For split deployments: any number of these and of 'serve --no-loops' can share one
    PostgreSQL catalog; planning and dispatch are safe against each other. With SQLite, run
    the loops in one process only.
    """
    import signal

    from app.main import build_context, build_loops

    settings = Settings()
    _logging(settings.log_level)

    async def _run() -> None:
        ctx = build_context(settings)
        if settings.should_auto_migrate:
            from app.db.migrate import upgrade_to_head_async

            await upgrade_to_head_async(settings.effective_database_url)
        loops = build_loops(ctx)

        def stop_all() -> None:
            for each in loops:
                each.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop_all)
        try:
            await asyncio.gather(*(each.run_forever() for each in loops))
        finally:
            await ctx.engine.dispose()

    asyncio.run(_run())


@cli.command()
def proxy(
    server: Annotated[str, typer.Option(help="Base URL of the service, e.g. https://backup.example.com")],
    token: Annotated[
        str | None,
        typer.Option(help="The proxy's token (or VMR_PROXY_TOKEN, or --token-file).", show_default=False),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the token (keeps it out of the process list).")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Jobs to run at once.")] = 2,
) -> None:
    """Run a proxy agent: it moves the data of the hosts it was registered for.

    Register it first (POST /api/v1/proxies) to get its token. It heartbeats, claims jobs,
    reads disks through vCenter and writes the repository directly; SIGTERM stops it cleanly.
    """
    import os

    from app.agent.main import run_proxy

    settings = Settings()
    _logging(settings.log_level)
    secret = token or os.environ.get("VMR_PROXY_TOKEN")
    if secret is None and token_file is not None:
        secret = token_file.read_text().strip()
    if not secret:
        raise typer.BadParameter("give the proxy's token with --token, --token-file or VMR_PROXY_TOKEN")
    asyncio.run(run_proxy(server, secret, workers))


@cli.command("guest-agent")
def guest_agent(
    server: Annotated[str, typer.Option(help="Base URL of the service, e.g. https://backup.example.com")],
    token: Annotated[
        str | None,
        typer.Option(help="The agent's token (or VMR_GUEST_TOKEN, or --token-file).", show_default=False),
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="File holding the token (keeps it out of the process list).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML file: how to reach this VM's databases, freeze/thaw hooks (see the docs)."),
    ] = None,
) -> None:
    """Run the guest agent inside a VM: database and file backups, restores, and application freezes
    for consistent image backups.

    Register it first (POST /api/v1/guest-agents with the VM's id) to get its token.
    """
    import os

    from app.agent.guest.config import ConfigError, load_config
    from app.agent.guest.main import run_guest_agent

    settings = Settings()
    _logging(settings.log_level)
    secret = token or os.environ.get("VMR_GUEST_TOKEN")
    if secret is None and token_file is not None:
        secret = token_file.read_text().strip()
    if not secret:
        raise typer.BadParameter("give the agent's token with --token, --token-file or VMR_GUEST_TOKEN")
    try:
        guest_config = load_config(config)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    asyncio.run(run_guest_agent(server, secret, guest_config))


@cli.command()
def migrate() -> None:
    """Bring the catalog schema up to date (safe to run repeatedly)."""
    from app.db.migrate import upgrade_to_head

    settings = Settings()
    _logging(settings.log_level)
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_to_head(settings.effective_database_url)
    typer.echo("catalog is up to date")


@cli.command("create-operator-key")
def create_operator_key(
    name: Annotated[str, typer.Option(help="What the key is for.")] = "bootstrap",
) -> None:
    """Create an operator API key and print it once (bootstraps the first key).

    Run it on the server host: whoever can run it can read the catalog anyway.
    """
    from app.auth.principal import Role
    from app.auth.schemas import ApiKeyCreate
    from app.auth.service import ApiKeyService
    from app.clock import SystemClock
    from app.db.engine import create_engine, create_sessionmaker
    from app.db.migrate import upgrade_to_head

    settings = Settings()
    settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    if settings.should_auto_migrate:
        upgrade_to_head(settings.effective_database_url)

    async def _create() -> str:
        engine = create_engine(settings.effective_database_url)
        try:
            async with create_sessionmaker(engine).begin() as session:
                _, secret = await ApiKeyService(session, SystemClock()).create(
                    None, ApiKeyCreate(name=name, role=Role.OPERATOR)
                )
                return secret
        finally:
            await engine.dispose()

    typer.echo(asyncio.run(_create()))


repository_cli = typer.Typer(help="Check and maintain the backup repository.", no_args_is_help=True)
cli.add_typer(repository_cli, name="repository")


@repository_cli.command("verify")
def repository_verify() -> None:
    """Re-read and re-hash every chunk that restore points reference; report damage.

    Exits 1 when anything is damaged or missing, listing the restore points affected.
    """
    from app.chunkstore import Repository, open_backend, verify

    settings = Settings()
    _logging(settings.log_level)
    passphrase = settings.repository_passphrase.get_secret_value() if settings.repository_passphrase else None
    repo = Repository.open(open_backend(settings.resolved_repository_path), passphrase=passphrase)
    report = verify(repo)
    typer.echo(
        f"checked {report.chunks_checked} chunks ({report.bytes_checked} bytes) of "
        f"{report.restore_points} restore points and {report.exports} restore archives "
        f"({report.disks} disks, {report.streams} streams)"
    )
    for problem in (*report.damaged, *report.missing):
        points = ", ".join(problem.restore_point_ids) or "none"
        exports = (
            f"; restore archives affected: {', '.join(problem.export_ids)}" if problem.export_ids else ""
        )
        typer.echo(
            f"{problem.kind} chunk {problem.chunk_hex}: {problem.detail}; "
            f"restore points affected: {points}{exports}"
        )
    for message in report.damaged_objects:
        typer.echo(f"damaged: {message}")
    from app.alerts.verify import record_in_catalog

    # Damage opens the verify alert (operators are notified), a clean run closes it.
    not_recorded = record_in_catalog(settings.effective_database_url, report)
    if not_recorded:
        typer.echo(f"note: {not_recorded}", err=True)
    if report.ok:
        typer.echo("repository OK")
    else:
        affected = ", ".join(report.affected_restore_points) or "none"
        archives = ", ".join(report.affected_exports)
        typer.echo(
            f"DAMAGE FOUND; restore points affected: {affected}"
            + (f"; restore archives affected: {archives}" if archives else "")
        )
        raise typer.Exit(1)


@repository_cli.command("gc")
def repository_gc(
    grace_hours: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Keep unreferenced chunks younger than this: they may belong to a backup still "
            "running. Must exceed the longest backup. Default VMR_GC_GRACE_HOURS (24).",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be freed; delete nothing.")
    ] = False,
) -> None:
    """Delete chunks that no restore point references any more (mark and sweep).

    Safe while backups run, as long as the grace period exceeds the longest backup by 30 minutes:
    a running backup's chunks are not referenced by a manifest yet, only their age protects them,
    and a proxy touches a chunk it found stored again only after 30 minutes.
    """
    from datetime import timedelta

    from app.chunkstore import Repository, gc, open_backend

    settings = Settings()
    _logging(settings.log_level)
    grace = timedelta(hours=settings.gc_grace_hours if grace_hours is None else grace_hours)
    if grace < timedelta(hours=1):
        typer.echo(
            f"warning: a grace period of {grace} can delete the chunks of a backup running now", err=True
        )
    passphrase = settings.repository_passphrase.get_secret_value() if settings.repository_passphrase else None
    repo = Repository.open(open_backend(settings.resolved_repository_path), passphrase=passphrase)
    report = gc(repo, grace, dry_run=dry_run)
    verb = "would free" if dry_run else "freed"
    typer.echo(
        f"marked {report.chunks_referenced} chunks referenced by {report.restore_points} restore points"
    )
    typer.echo(
        f"{verb} {report.chunks_deleted} chunks, {report.bytes_freed} bytes "
        f"({report.bytes_freed / 2**20:.1f} MiB); kept {report.chunks_kept_young} unreferenced chunks "
        f"younger than {grace}; {report.indexes_deleted} orphan indexes"
    )
    if report.sweeps_recovered:
        typer.echo(f"put back {report.sweeps_recovered} objects an interrupted collection had moved aside")


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    cli()
