"""The security suite's servers: Genloom as `genloom serve` runs it (uvicorn with the bounded
protocol of server/http.py), in a thread of the test process, with API keys on and an admin key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from genloom.server import GenloomServer
from tests.api.conftest import running_server

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
    """A real server on 127.0.0.1 with API keys on and ADMIN_KEY as its admin key."""
    with running_server(tmp_path, model_dir, **({"auth": "enabled", "admin_key": ADMIN_KEY} | sections)) as served:
        yield served


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


@dataclass
class Received:
    port: int
    paths: list[str] = field(default_factory=list)  # of every POST, in order
    headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@contextmanager
def receiver() -> Iterator[Received]:
    """A local HTTP receiver on 127.0.0.1 that answers 200 to any POST and keeps what it got:
    a webhook's target, or what an SSRF would reach."""
    got = Received(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.paths.append(self.path)
            got.headers.append(dict(self.headers))
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.port = server.server_address[1]
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield got
    finally:
        server.shutdown()
        server.server_close()
