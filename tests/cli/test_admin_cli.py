"""`genloom tenants …` and `genloom keys …` against a real server with auth on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from genloom.cli.main import app
from tests.api.conftest import running_server

runner = CliRunner()
ADMIN_KEY = "gl-" + "c" * 43


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[str]:
    server_dir = tmp_path_factory.mktemp("admin-cli")
    with running_server(server_dir, tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY) as (base, _):
        yield base


def cli(base: str, *args: str, key: str | None = ADMIN_KEY) -> Result:
    env = {"COLUMNS": "200"} | ({"GENLOOM_API_KEY": key} if key else {})
    return runner.invoke(app, [*args, "--url", base], env=env)


def test_create_a_tenant_and_a_key_then_use_and_revoke_it(base_url):
    created = cli(base_url, "tenants", "create", "cli-team", "--tier", "premium", "--rpm", "100", "--json")
    assert created.exit_code == 0, created.output
    tenant = json.loads(created.stdout)
    assert tenant["tier"] == "premium" and tenant["limits"] == {"requests_per_minute": 100}
    assert "cli-team" in cli(base_url, "tenants", "list").stdout

    key = cli(base_url, "keys", "create", tenant["id"], "--name", "ci").stdout.strip()
    assert key.startswith("gl-")
    assert cli(base_url, "jobs", "list", key=key).exit_code == 0  # the new key works
    listed = json.loads(cli(base_url, "keys", "list", tenant["id"], "--json").stdout)
    assert [k["prefix"] for k in listed] == [key[:10]] and key not in cli(base_url, "keys", "list", tenant["id"]).stdout

    assert cli(base_url, "keys", "revoke", listed[0]["id"]).exit_code == 0
    refused = cli(base_url, "jobs", "list", key=key)
    assert refused.exit_code == 1 and "revoked" in refused.stderr

    updated = cli(base_url, "tenants", "update", tenant["id"], "--tier", "standard", "--json")
    assert json.loads(updated.stdout)["tier"] == "standard"


def test_admin_commands_refuse_without_an_admin_key(base_url):
    no_key = cli(base_url, "tenants", "list", key=None)
    assert no_key.exit_code == 1 and "API key" in no_key.stderr
    tenant = json.loads(cli(base_url, "tenants", "create", "limited", "--json").stdout)
    tenant_key = cli(base_url, "keys", "create", tenant["id"]).stdout.strip()
    forbidden = cli(base_url, "tenants", "list", key=tenant_key)
    assert forbidden.exit_code == 1 and "admin key" in forbidden.stderr
