"""The security suite's servers: Genloom as `genloom serve` runs it (uvicorn with the bounded
protocol of server/http.py), in a thread of the test process, with API keys on and an admin key."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
