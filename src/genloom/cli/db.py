"""`genloom db …`: the database schema, for running migrations as their own deployment step."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from genloom.store import Database

db_app = typer.Typer(help="Manage the database schema (SQLite file or PostgreSQL).", no_args_is_help=True)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
UrlOption = Annotated[
    str | None,
    typer.Option("--database-url", envvar="GENLOOM_DATABASE_URL", help="SQLAlchemy URL [default: SQLite in the data dir]."),
]


def _url(url: str | None) -> str:
    """The URL given (postgresql:// mapped to the shipped driver, as `genloom serve` does), else the settings'."""
    from genloom.config import load_settings

    return load_settings(**({"database_url": url} if url else {})).resolved_database_url()


async def _revision(database: Database) -> str | None:
    async with database.engine.connect() as conn:
        try:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except SQLAlchemyError:
            return None  # an empty database


def _run(url: str | None, upgrade: bool) -> None:
    async def run() -> tuple[str | None, str | None]:
        database = Database(url=_url(url))
        try:
            before = await _revision(database)
            if upgrade:
                await database.migrate()
            return before, await _revision(database)
        finally:
            await database.dispose()

    try:
        before, after = asyncio.run(run())
    except (SQLAlchemyError, OSError, ValueError) as e:
        err.print(f"[bold red]error:[/] cannot migrate the database: {type(e).__name__}: {e}")
        raise typer.Exit(1) from e
    if not upgrade:
        out.print(after or "empty (no schema yet)")
    elif before == after:
        out.print(f"the schema is current (revision {after})")
    else:
        out.print(f"upgraded the schema from {before or 'empty'} to revision {after}")


@db_app.command("upgrade")
def upgrade(database_url: UrlOption = None) -> None:
    """Bring the schema up to this release's newest revision. Safe to run again, and from several
    replicas at once (on PostgreSQL they take turns under an advisory lock)."""
    _run(database_url, upgrade=True)


@db_app.command("current")
def current(database_url: UrlOption = None) -> None:
    """Print the schema's revision."""
    _run(database_url, upgrade=False)
