"""`genloom datasets …` and `genloom fine-tune …` against a real server: build from a local JSONL file (uploaded on the
way), list, show and export, and a clear failure for a source that is not one."""

from __future__ import annotations

import json
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
    with running_server(tmp_path_factory.mktemp("datasets-cli"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY) as (base, _):
        yield base


def cli(base: str, *args: str) -> Result:
    return runner.invoke(app, [*args, "--url", base], env={"COLUMNS": "200", "GENLOOM_API_KEY": ADMIN_KEY})


def test_build_from_a_file_then_list_show_and_export(base_url, tmp_path):
    lines = [{"messages": [{"role": "user", "content": f"Say hello to {name}."},
                           {"role": "assistant", "content": f"Hello, {name}! Nice to meet you."}]}
             for name in ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "John", "Radia", "Ken")]
    source = tmp_path / "train.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n{broken\n")
    built = cli(base_url, "datasets", "build", "greetings", "--from", str(source), "--eval-fraction", "0.3",
                "--near-duplicates", "1.0")
    assert built.exit_code == 0, built.output
    assert built.stdout.startswith("greetings@v1: 10 rows, new")
    assert "dropped: invalid_line 1" in built.stdout and "line 11: not JSON" in built.stdout
    again = cli(base_url, "datasets", "build", "greetings", "--from", str(source), "--eval-fraction", "0.3",
                "--near-duplicates", "1.0")
    assert "greetings@v1: 10 rows, unchanged" in again.stdout
    assert "greetings@v1" in cli(base_url, "datasets", "list").stdout
    shown = json.loads(cli(base_url, "datasets", "show", "greetings@v1").stdout)
    assert shown["manifest"]["lineage"]["rows_by_source"] == {"file": 10}
    exported = tmp_path / "out.jsonl"
    assert cli(base_url, "datasets", "export", "greetings", "-o", str(exported), "--split", "train").exit_code == 0
    train = [json.loads(x) for x in exported.read_text().splitlines()]
    assert len(train) == shown["manifest"]["counts"]["train"] and all(x in lines for x in train)


def test_a_source_that_is_neither_kind_nor_file_fails_clearly(base_url, tmp_path):
    result = cli(base_url, "datasets", "build", "x", "--from", str(tmp_path / "missing.jsonl"))
    assert result.exit_code != 0 and "--from is 'feedback', 'requests' or a JSONL file" in result.output


def test_fine_tune_run_follows_the_job_to_its_model(base_url, tmp_path):
    data = tmp_path / "ships.jsonl"
    data.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"ship {i}"},
                                                       {"role": "assistant", "content": f"Ahoy {i}!"}]}) for i in range(8)))
    ran = cli(base_url, "fine-tune", "run", "--model", "tiny", "--data", str(data), "--suffix", "cli", "--epochs", "2")
    assert ran.exit_code == 0, ran.output
    assert "training started on tiny@v1" in ran.stdout and "succeeded: ft:tiny:cli:" in ran.stdout
    listed = cli(base_url, "fine-tune", "list")
    assert "succeeded  tiny  ft:tiny:cli:" in listed.stdout
    missing = cli(base_url, "fine-tune", "cancel", "ftjob-nothing")
    assert missing.exit_code != 0 and "no fine-tuning job" in missing.output
