"""The ``vmrecovery`` command line."""

from __future__ import annotations

import asyncio
import logging
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


@cli.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (VMR_HOST, default 127.0.0.1).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (VMR_PORT, default 8080).")] = None,
    no_loops: Annotated[
        bool, typer.Option("--no-loops", help="Do not run background loops (inventory refresh) here.")
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
    settings = Settings(**overrides)  # type: ignore[arg-type]
    _logging(settings.log_level)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )


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


@cli.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    cli()
