"""A real Genloom server (uvicorn, real HTTP on 127.0.0.1) in a thread of the test process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
import yaml

from genloom.config import load_settings
from genloom.server import GenloomServer
from genloom.server.http import uvicorn_config
from tests.conftest import free_port


@contextmanager
def running_server(tmp_path: Path, model_dir: Path, *, observer=None, scanners=None, **sections) -> Iterator[tuple[str, GenloomServer]]:
    # Auth is off unless a test turns it on: most tests are about something else (tests/api/test_auth.py is not).
    config = {
        "builtin_models": False, "data_dir": str(tmp_path / "data"), "models": [{"name": "tiny", "path": str(model_dir)}],
        "auth": "disabled",
    }
    config.update(sections)
    config_file = tmp_path / "genloom.yaml"
    config_file.write_text(yaml.safe_dump(config))
    settings = load_settings(config_file)
    server = GenloomServer(settings, observer=observer, scanners=scanners)
    port = free_port()
    # As `genloom serve` serves (the bounded protocol of server/http.py), on the plain asyncio loop
    # (not uvloop), so a test may stand in for DNS by patching socket.getaddrinfo.
    uv = uvicorn.Server(uvicorn_config(server.app, settings.server, host="127.0.0.1", port=port, loop="asyncio",
                                       log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the test server did not become ready")
            time.sleep(0.05)
        yield base, server
    finally:
        uv.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, GenloomServer]]:
    with running_server(tmp_path_factory.mktemp("server"), tiny_model_dir) as s:
        yield s


@pytest.fixture()
def base_url(server) -> str:
    return server[0]


@pytest.fixture()
def client(base_url) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
