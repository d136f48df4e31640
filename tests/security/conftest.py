"""The security suite's servers: Genloom as `genloom serve` runs it (uvicorn with the bounded
protocol of server/http.py), in a thread of the test process, with API keys on and an admin key."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
import yaml

from genloom.config import load_settings
from genloom.server import GenloomServer
from genloom.server.http import uvicorn_config
from tests.conftest import free_port

ADMIN_KEY = "gl-security-suite-admin-key-0123456789abcdef"


@dataclass(frozen=True)
class Tenant:
    id: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextmanager
def secured_server(tmp_path: Path, model_dir: Path, **sections) -> Iterator[tuple[str, GenloomServer]]:
    """A real server on 127.0.0.1 with ADMIN_KEY as its admin key. The plain asyncio loop (not
    uvloop), so a test may stand in for DNS by patching socket.getaddrinfo."""
    config = {
        "builtin_models": False, "data_dir": str(tmp_path / "data"), "models": [{"name": "tiny", "path": str(model_dir)}],
        "auth": "enabled", "admin_key": ADMIN_KEY,
    } | sections
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    settings = load_settings(tmp_path / "genloom.yaml")
    server = GenloomServer(settings)
    port = free_port()
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
            assert time.monotonic() < deadline, "the test server did not become ready"
            time.sleep(0.05)
        yield base, server
    finally:
        uv.should_exit = True
        thread.join(30)


def admin_client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


def new_tenant(base: str, name: str) -> Tenant:
    """A tenant without limits (so a fuzzing run is never rate-limited) and a tenant-scoped key."""
    with admin_client(base) as admin:
        made = admin.post("/v1/admin/tenants", json={"name": name, "tier": "standard"})
        assert made.status_code == 201, made.text
        key = admin.post(f"/v1/admin/tenants/{made.json()['id']}/keys", json={"name": "security-suite"})
        assert key.status_code == 201, key.text
    return Tenant(id=made.json()["id"], key=key.json()["key"])
