"""What a process runs, and how it is run: the API and workers together (embedded, or sharing a
Redis queue), the API only (`genloom serve --role api`), or workers only (`genloom worker`)."""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

import uvicorn

from genloom.config import Settings
from genloom.server.http import uvicorn_config

if TYPE_CHECKING:
    from genloom.server.lifecycle import GenloomServer


class Process(str, Enum):
    ALL = "all"
    API = "api"
    WORKER = "worker"


def check_role(process: Process, settings: Settings) -> None:
    if process is not Process.ALL and not settings.redis_url:
        raise ValueError(f"a{'n' if process is Process.API else ''} {process.value} process needs redis_url")


def runs_here(process: Process, worker_models: set[str] | None, model: str) -> bool:
    """Whether a process runs `model` (holds its weights and a worker), else only describes it
    (an API replica checks requests against it). `worker_models`: `genloom worker --models`."""
    if process is Process.API:
        return False
    return worker_models is None or model in worker_models


class _DrainingUvicorn(uvicorn.Server):
    """Uvicorn that tells Genloom to drain before it stops accepting connections. SIGTERM ends in
    a drain and exit code 0; SIGINT keeps uvicorn's own behaviour (a second one forces the exit)."""

    def __init__(self, config: uvicorn.Config, genloom: GenloomServer) -> None:
        super().__init__(config)
        self._genloom = genloom

    def handle_exit(self, sig: int, frame) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.call_soon_threadsafe(self._genloom.begin_drain)
        if sig == signal.SIGTERM:
            self.should_exit = True  # not re-raised after shutdown: a completed drain is a clean exit
        else:
            super().handle_exit(sig, frame)


class StartupError(RuntimeError):
    """Something the process needs at start is not there: one line for the operator, exit 2."""


def bind(host: str, port: int) -> socket.socket:
    """Take the HTTP port before anything else (models load after): a port in use stops the
    process at once with a clear error, never a process that runs without taking work. Port 0
    takes a free port (`listening_url` tells which)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        hint = "; give another with --port (0 picks a free one)" if e.errno == errno.EADDRINUSE else ""
        raise StartupError(f"cannot listen on {host}:{port} (server.port): {e.strerror}{hint}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def listening_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def check_services(settings: Settings, *, timeout_s: float = 10.0) -> None:
    """The database and Redis answer, or one StartupError naming the setting (no traceback)."""
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = make_url(settings.resolved_database_url())
    if url.get_backend_name() != "sqlite":  # a SQLite file is made by the first migration
        engine = create_async_engine(url)
        try:
            async with asyncio.timeout(timeout_s), engine.connect() as connection:
                await connection.execute(text("select 1"))
        except Exception as e:
            shown = url.render_as_string(hide_password=True)
            raise StartupError(f"cannot reach the database at {shown} (database_url): {_reason(e)}") from None
        finally:
            await engine.dispose()
    if settings.redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
        try:
            await client.ping()
        except Exception as e:
            shown = make_url(settings.redis_url.replace("redis://", "redis+x://", 1)).render_as_string(hide_password=True)
            shown = shown.replace("redis+x://", "redis://", 1)
            raise StartupError(f"cannot reach Redis at {shown} (redis_url): {_reason(e)}") from None
        finally:
            await client.aclose()


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "no answer (timed out)"
    return f"{type(e).__name__}: {e}".strip().rstrip(":")


def run(
    settings: Settings, *, process: Process | None = None, worker_models: list[str] | None = None,
    on_listening: Callable[[str], None] = lambda url: None,
) -> int:
    """Serve until SIGTERM/SIGINT; the exit code is 1 when the models could not be loaded.
    StartupError when the port is taken or the database or Redis cannot be reached."""
    from genloom.server.lifecycle import GenloomServer

    sock = bind(settings.server.host, settings.server.port)
    try:
        asyncio.run(check_services(settings))
        server = GenloomServer(settings, process=process, worker_models=worker_models)
    except BaseException:
        sock.close()
        raise
    url = listening_url(sock)
    server.card.health_url = url
    on_listening(url)
    config = uvicorn_config(
        server.app,
        settings.server,
        log_config=None,  # uvicorn's lines go through Genloom's handler (cli: configure_logging)
        log_level=settings.server.log_level,
        # Genloom's own drain decides when streams end; uvicorn's timeout is only a backstop.
        timeout_graceful_shutdown=int(settings.server.drain_timeout_s) + 5,
        access_log=False,
    )
    uv = _DrainingUvicorn(config, server)
    failed: list[str] = []

    def stop_on_fatal(reason: str) -> None:
        failed.append(reason)
        uv.should_exit = True

    server.on_fatal = stop_on_fatal
    uv.run(sockets=[sock])
    return 1 if failed else 0
