"""What a process runs, and how it is run: the API and workers together (embedded, or sharing a
Redis queue), the API only (`genloom serve --role api`), or workers only (`genloom worker`)."""

from __future__ import annotations

import asyncio
import signal
from enum import Enum
from typing import TYPE_CHECKING

import uvicorn

from genloom.config import Settings

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


def run(settings: Settings, *, process: Process | None = None, worker_models: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; the exit code is 1 when the models could not be loaded."""
    from genloom.server.lifecycle import GenloomServer

    server = GenloomServer(settings, process=process, worker_models=worker_models)
    config = uvicorn.Config(
        server.app,
        host=settings.server.host,
        port=settings.server.port,
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
    uv.run()
    return 1 if failed else 0
