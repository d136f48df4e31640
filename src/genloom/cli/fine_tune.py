"""`genloom fine-tune …`: start a fine-tuning job on a running server and follow it with a
progress bar (its events over server-sent events), list jobs, cancel one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from genloom.cli.jobs import DEFAULT_URL, STREAM_TIMEOUT, ApiKeyOption, JsonOption, Server, UrlOption, _check, _fail, out

fine_tune_app = typer.Typer(help="Fine-tune a model with LoRA (OpenAI's fine-tuning API).", no_args_is_help=True)


def _server(url: str, api_key: str | None) -> Server:
    return Server(url, api_key, tier=None, tenant=None)


@fine_tune_app.command("run")
def run(
    model: Annotated[str, typer.Option(help="The base model (a local text model).")],
    data: Annotated[str, typer.Option("--data", help="A JSONL file in OpenAI's chat format (uploaded), a file id, or a dataset version (name@vN)")],
    validation: Annotated[str | None, typer.Option(help="Validation data, the same kinds as --data")] = None,
    suffix: Annotated[str | None, typer.Option(help="Part of the fine-tuned model's name")] = None,
    epochs: Annotated[int | None, typer.Option(min=1, max=50)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, max=256)] = None,
    learning_rate_multiplier: Annotated[float | None, typer.Option(min=0.0001)] = None,
    rank: Annotated[int | None, typer.Option("--lora-r", min=1, max=256, help="LoRA rank")] = None,
    seed: int | None = None,
    follow: Annotated[bool, typer.Option(help="Follow the job with a progress bar until it ends")] = True,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a fine-tuning job, then follow it to the end."""
    server = _server(url, api_key)
    hyper = {k: v for k, v in {"n_epochs": epochs, "batch_size": batch_size,
                               "learning_rate_multiplier": learning_rate_multiplier}.items() if v is not None}
    body: dict[str, Any] = {"model": model, "training_file": _data(server, data),
                            "method": {"type": "supervised", "supervised": {"hyperparameters": hyper}}}
    if validation:
        body["validation_file"] = _data(server, validation)
    for key, value in (("suffix", suffix), ("seed", seed), ("lora", {"r": rank} if rank else None)):
        if value is not None:
            body[key] = value
    job = server.call("POST", "/v1/fine_tuning/jobs", json=body).json()
    if not follow:
        out.print_json(json.dumps(job)) if as_json else out.print(f"{job['id']}\t{job['status']}")
        return
    _follow(server, job["id"], as_json)


@fine_tune_app.command("watch")
def watch(job_id: Annotated[str, typer.Argument(help="ftjob-…")], url: UrlOption = DEFAULT_URL,
          api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Follow a job with a progress bar until it ends."""
    _follow(_server(url, api_key), job_id, as_json)


@fine_tune_app.command("list")
def list_jobs(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """The newest jobs: id, status, model, fine-tuned model."""
    data = _server(url, api_key).call("GET", "/v1/fine_tuning/jobs", params={"limit": 100}).json()["data"]
    if as_json:
        out.print_json(json.dumps(data))
        return
    for j in data:
        out.print(f"{j['id']}  {j['status']}  {j['model']}  {j['fine_tuned_model'] or '-'}")


@fine_tune_app.command("cancel")
def cancel(job_id: Annotated[str, typer.Argument(help="ftjob-…")], url: UrlOption = DEFAULT_URL,
           api_key: ApiKeyOption = None) -> None:
    """Cancel a job: a queued one at once, a running one at its next step."""
    job = _server(url, api_key).call("POST", f"/v1/fine_tuning/jobs/{job_id}/cancel").json()
    out.print(f"{job['id']}  {job['status']}")


def _data(server: Server, given: str) -> str:
    path = Path(given)
    if path.is_file():
        with path.open("rb") as f:
            return server.call("POST", "/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, f)}).json()["id"]
    return given


def _follow(server: Server, job_id: str, as_json: bool) -> None:
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[steps]}"),
               TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn())
    with httpx.Client(base_url=server.url, headers=server.headers, timeout=STREAM_TIMEOUT, trust_env=False) as http, \
            http.stream("GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}) as response, \
            Progress(*columns, console=out, disable=as_json) as progress:
        _check(response)
        bar = progress.add_task(job_id, total=None, loss="-", steps="waiting")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line.removeprefix("data: "))
            data = event.get("data") or {}
            if event.get("type") == "metrics":
                progress.update(bar, completed=data["step"], total=data["total_steps"], loss=f"{data['train_loss']:.4f}",
                                steps=f"step {data['step']}/{data['total_steps']}")
            elif not as_json:
                progress.console.print(f"[dim]{event['message']}[/dim]")
    job = server.call("GET", f"/v1/fine_tuning/jobs/{job_id}").json()
    if as_json:
        out.print_json(json.dumps(job))
    elif job["status"] == "succeeded":
        out.print(f"{job['id']}  succeeded: {job['fine_tuned_model']}")
    else:
        _fail(f"{job['id']} {job['status']}: {(job.get('error') or {}).get('message', '')}")
