"""`genloom jobs …` against a real server on 127.0.0.1, driven through the Typer app."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from genloom.cli.main import app
from tests.api.conftest import running_server
from tests.conftest import free_port

runner = CliRunner()


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[str]:
    server_dir = tmp_path_factory.mktemp("server")
    with running_server(server_dir, tiny_model_dir, runtime={"max_batch_size": 1, "realtime_reserved_rows": 0}) as (base, _):
        yield base


def jobs(base: str, *args: str, input: str | None = None) -> Result:
    return runner.invoke(app, ["jobs", *args, "--url", base], input=input, env={"COLUMNS": "200"})


def submit_json(base: str, *args: str) -> dict:
    result = jobs(base, "submit", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def wait_done(base: str, job_id: str) -> dict:
    result = jobs(base, "watch", job_id, "--json")
    assert result.exit_code in (0, 1, 2), result.output
    return json.loads(jobs(base, "show", job_id, "--json").stdout)


def test_submit_then_show_a_completed_job_with_its_result(base_url: str) -> None:
    job = submit_json(base_url, "hello", "--model", "tiny", "--max-tokens", "4", "--metadata", "team=cli")
    assert job["id"].startswith("job_") and job["metadata"] == {"team": "cli"}
    finished = wait_done(base_url, job["id"])
    assert finished["status"] == "completed"
    text = finished["result"]["choices"][0]["message"]["content"]

    shown = jobs(base_url, "show", job["id"])
    assert shown.exit_code == 0, shown.output
    assert "completed" in shown.stdout and "transitions" in shown.stdout and "team" in shown.stdout
    assert text in shown.stdout


def test_submit_wait_prints_the_generated_text(base_url: str) -> None:
    result = jobs(base_url, "submit", "-", "--completions", "--model", "tiny", "--max-tokens", "4", "--wait", input="once upon")
    assert result.exit_code == 0, result.output
    job_id = json.loads(jobs(base_url, "list", "--limit", "1", "--json").stdout)["data"][0]["id"]
    job = json.loads(jobs(base_url, "show", job_id, "--json").stdout)
    assert job["url"] == "/v1/completions"
    assert result.stdout == job["result"]["choices"][0]["text"] + "\n"


def test_list_shows_submitted_jobs_and_filters_by_state(base_url: str, tmp_path: Path) -> None:
    done = submit_json(base_url, "hi", "--model", "tiny", "--max-tokens", "2")
    wait_done(base_url, done["id"])
    listed = jobs(base_url, "list")
    assert listed.exit_code == 0, listed.output
    assert done["id"] in listed.stdout and "completed" in listed.stdout

    page = json.loads(jobs(base_url, "list", "--state", "completed", "--json").stdout)
    assert done["id"] in [j["id"] for j in page["data"]]
    assert {j["status"] for j in page["data"]} == {"completed"}
    cancelled = json.loads(jobs(base_url, "list", "--state", "cancelled", "--json").stdout)
    assert done["id"] not in [j["id"] for j in cancelled["data"]]


def test_cancel_of_a_finished_job_prints_the_conflict_and_exits_1(base_url: str) -> None:
    job = submit_json(base_url, "hi", "--model", "tiny", "--max-tokens", "2")
    wait_done(base_url, job["id"])
    result = jobs(base_url, "cancel", job["id"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and "completed" in result.stderr
    assert "Traceback" not in result.output


def test_cancelled_job_can_be_retried_and_then_runs_again(base_url: str, tmp_path: Path) -> None:
    # The server decodes one sequence at a time, so a job behind a long one waits in line.
    long_body = tmp_path / "long.json"
    long_body.write_text(json.dumps({"model": "tiny", "prompt": "go", "max_tokens": 400, "ignore_eos": True}))
    blocker = submit_json(base_url, "--file", str(long_body))["id"]
    waiting = submit_json(base_url, "go", "--model", "tiny", "--max-tokens", "20")["id"]
    assert json.loads(jobs(base_url, "show", waiting, "--json").stdout)["position"] is not None

    cancelled = jobs(base_url, "cancel", waiting)
    assert cancelled.exit_code == 0, cancelled.output
    assert cancelled.stdout.split() == [waiting, "cancelled"]
    assert jobs(base_url, "watch", waiting).exit_code == 2
    assert jobs(base_url, "cancel", blocker).exit_code == 0

    retried = jobs(base_url, "retry", waiting)
    assert retried.exit_code == 0, retried.output
    assert retried.stdout.split() == [waiting, "queued"]
    # Watching a retried job follows its new run past the earlier cancellation.
    watched = jobs(base_url, "watch", waiting)
    assert watched.exit_code == 0, watched.output
    job = json.loads(jobs(base_url, "show", waiting, "--json").stdout)
    assert [t["status"] for t in job["transitions"]][-3:] == ["queued", "processing", "completed"]


def test_watch_json_emits_status_events_ending_with_completed(base_url: str) -> None:
    job = submit_json(base_url, "hello", "--model", "tiny", "--max-tokens", "8")
    result = jobs(base_url, "watch", job["id"], "--json")
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.stdout.splitlines()]
    statuses = [e["status"] for e in events if e["type"] == "job.status"]
    assert statuses[0] == "queued" and statuses[-1] == "completed"


def test_unknown_job_exits_1_with_the_servers_404_message(base_url: str) -> None:
    for command in ("show", "watch", "cancel", "retry"):
        result = jobs(base_url, command, "job_nope")
        assert result.exit_code == 1, (command, result.output)
        assert result.stderr.startswith("error: ") and "job_nope" in result.stderr


def test_tier_and_tenant_are_sent_as_headers(base_url: str) -> None:
    job = submit_json(base_url, "hi", "--model", "tiny", "--max-tokens", "2", "--tier", "premium", "--tenant", "acme")
    assert job["tier"] == "premium"
    assert jobs(base_url, "show", job["id"], "--tenant", "acme").exit_code == 0
    assert jobs(base_url, "show", job["id"]).exit_code == 1  # another tenant's job is not found


def test_invalid_request_exits_1_with_the_servers_message(base_url: str) -> None:
    result = jobs(base_url, "submit", "hi", "--model", "no-such-model")
    assert result.exit_code == 1
    assert "no-such-model" in result.stderr


def test_unreachable_server_exits_1_with_a_clear_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = jobs(url, "list")
    assert result.exit_code == 1
    assert f"not reachable at {url}" in result.stderr
    assert "Traceback" not in result.output
