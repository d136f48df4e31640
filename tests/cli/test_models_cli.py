"""`genloom models …` against a real server with auth on."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from genloom.cli.main import app
from tests.api.conftest import running_server

runner = CliRunner()
ADMIN_KEY = "gl-" + "d" * 43


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("models-cli"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY) as (base, _):
        yield base


def cli(base: str, *args: str, key: str | None = ADMIN_KEY) -> Result:
    env = {"COLUMNS": "200"} | ({"GENLOOM_API_KEY": key} if key else {})
    return runner.invoke(app, [*args, "--url", base], env=env)


def test_register_alias_roll_out_and_read_the_history_from_the_shell(base_url, tiny_model_dir):
    registered = cli(base_url, "models", "register", "tiny", "--path", str(tiny_model_dir), "--note", "retrained", "--json")
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout)["id"] == "tiny@v2"
    deadline = time.monotonic() + 60
    while "tiny@v2" not in cli(base_url, "models", "list").stdout or '"loaded_here": true' not in cli(base_url, "models", "list", "--json").stdout.replace("\n", " "):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    moved = cli(base_url, "models", "alias", "tiny", "staging", "v2")
    assert moved.exit_code == 0 and "— -> v2" in moved.stdout
    started = cli(base_url, "models", "rollout", "start", "tiny", "--candidate", "v2", "--percent", "25", "--min-requests", "5")
    assert started.exit_code == 0, started.output
    status = cli(base_url, "models", "rollout", "status", "tiny")
    assert "canary" in status.stdout and "25.0%" in status.stdout
    back = cli(base_url, "models", "rollout", "rollback", "tiny", "--reason", "not today")
    assert back.exit_code == 0 and "rolled_back" in back.stdout and "not today" in back.stdout
    history = cli(base_url, "models", "history", "tiny", "--json")
    actions = [e["action"] for e in json.loads(history.stdout)["data"]]
    assert {"register", "alias", "rollout.start", "rollout.rolled_back"} <= set(actions)


def test_a_wrong_call_is_one_line_and_a_non_zero_exit(base_url):
    unknown = cli(base_url, "models", "alias", "nope", "staging", "v1")
    assert unknown.exit_code != 0 and "does not exist" in unknown.output and "Traceback" not in unknown.output
    no_key = cli(base_url, "models", "list", key=None)
    assert no_key.exit_code != 0 and "Traceback" not in no_key.output
