"""`genloom jobs …`: submit and follow async jobs on a running server."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from genloom.jobs import Tier
from genloom.jobs.records import JobState

jobs_app = typer.Typer(help="Submit and follow async jobs on a running server.", no_args_is_help=True)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL = "genloom-text-mini"
EXIT_CODES = {"completed": 0, "failed": 1, "cancelled": 2}
STYLES = {"completed": "green", "failed": "red", "cancelled": "yellow", "retrying": "magenta", "processing": "cyan"}
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A job may wait in line a long time without an event, so reading its events never times out.
STREAM_TIMEOUT = httpx.Timeout(30.0, connect=5.0, read=None)

UrlOption = Annotated[str, typer.Option("--url", help="Base URL of the Genloom server.")]
ApiKeyOption = Annotated[str | None, typer.Option(envvar="GENLOOM_API_KEY", help="Sent as Authorization: Bearer.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the server's JSON instead of a readable view.")]
TierOption = Annotated[Tier | None, typer.Option(help="Scheduling tier to ask for (X-Genloom-Tier).")]
TenantOption = Annotated[str | None, typer.Option(help="Tenant to act as (X-Genloom-Tenant).")]
JobId = Annotated[str, typer.Argument(help="The job's id (job_...).")]


def _fail(message: str) -> NoReturn:
    err.print(Text.assemble(("error:", "bold red"), " ", message))
    raise typer.Exit(1)


class Server:
    """The jobs API of one server; every failure ends the command with one line, never a traceback."""

    def __init__(self, url: str, api_key: str | None, tier: Tier | None, tenant: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if tier:
            self.headers["X-Genloom-Tier"] = tier.value
        if tenant:
            self.headers["X-Genloom-Tenant"] = tenant

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._transport_errors(), self._client(TIMEOUT) as http:
            response = http.request(method, path, **kwargs)
        _check(response)
        return response

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """The job's events as they happen, until the server ends the stream."""
        with self._transport_errors(), self._client(STREAM_TIMEOUT) as http:
            with http.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                _check(response)
                for line in response.iter_lines():
                    if line == "data: [DONE]":
                        return
                    if line.startswith("data: "):
                        event = json.loads(line.removeprefix("data: "))
                        if "error" in event:
                            _fail(event["error"].get("message") or "the event stream failed")
                        yield event

    def _client(self, timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, trust_env=False)

    @contextmanager
    def _transport_errors(self) -> Iterator[None]:
        try:
            yield
        except httpx.ConnectError as e:
            _fail(f"the server is not reachable at {self.url} (is `genloom serve` running there?): {e}")
        except httpx.TimeoutException:
            _fail(f"the server at {self.url} did not answer within {TIMEOUT.read:.0f}s")
        except httpx.TransportError as e:
            _fail(f"talking to the server at {self.url} failed: {e}")


def _check(response: httpx.Response) -> None:
    if response.is_success:
        return
    response.read()
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):  # not Genloom's error shape: a proxy, or not a Genloom server
        message = f"HTTP {response.status_code} from {response.url}: {response.text[:200]}"
    _fail(message)


def _time(at: float | None) -> str:
    return "-" if at is None else datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _status(status: str) -> Text:
    return Text(status, style=STYLES.get(status, ""))


def _print_job(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    else:
        out.print(Text.assemble(job["id"], " ", _status(job["status"])))


def _result_text(result: dict[str, Any] | None) -> str:
    """The generated text: a chat choice's message content or a completion choice's text."""
    choices = (result or {}).get("choices", [])
    texts = [(c.get("message") or {}).get("content") or c.get("text") or "" for c in choices]
    if len(texts) == 1:
        return texts[0]
    return "\n\n".join(f"[choice {i}]\n{text}" for i, text in enumerate(texts))


def _follow(server: Server, job_id: str, print_events: bool) -> dict[str, Any]:
    """Follow the job until it finishes, with a live line on stderr or each event as a JSON line; return the job."""
    try:
        if print_events:
            for event in server.events(job_id):
                typer.echo(json.dumps(event))
        else:
            status, tokens, note = "waiting", 0, ""
            with err.status(f"{job_id}: waiting") as live:
                for event in server.events(job_id):
                    if event["type"] == "job.status":
                        status, note = event["status"], event.get("message") or ""
                    elif event["type"] == "job.progress":
                        tokens = (event.get("progress") or {}).get("completion_tokens") or 0
                    live.update(f"{job_id}: {status}, {tokens} tokens" + (f" ({note})" if note else ""))
    except KeyboardInterrupt:
        err.print(f"stopped watching; the job goes on (`genloom jobs cancel {job_id}` stops it)")
        raise typer.Exit(130) from None
    job = server.call("GET", f"/v1/jobs/{job_id}").json()
    if job["status"] not in EXIT_CODES:
        _fail(f"the event stream ended while the job was {job['status']}; `genloom jobs show {job_id}` tells more")
    return job


def _finish(job: dict[str, Any], as_json: bool) -> NoReturn:
    """Print a finished job's result (or its error) and exit 0 completed, 1 failed, 2 cancelled."""
    if as_json:
        typer.echo(json.dumps(job, indent=2))
    elif job["status"] == "completed":
        typer.echo(_result_text(job["result"]))
    elif job["status"] == "failed":
        err.print(Text.assemble(("failed:", "bold red"), " ", (job["error"] or {}).get("message", "(no message)")))
    else:
        err.print(Text.assemble((job["status"], "yellow"), f": {job['id']}"))
    raise typer.Exit(EXIT_CODES[job["status"]])


def _request(prompt: str | None, file: typer.FileText | None, completions: bool) -> tuple[str, dict[str, Any]]:
    """The endpoint and OpenAI request body to run, from a prompt or a JSON file."""
    if (prompt is None) == (file is None):
        raise typer.BadParameter("give either a PROMPT or --file with a JSON request body")
    if file is None:
        text = sys.stdin.read() if prompt == "-" else prompt
        if completions:
            return "/v1/completions", {"prompt": text}
        return "/v1/chat/completions", {"messages": [{"role": "user", "content": text}]}
    try:
        body = json.load(file)
    except json.JSONDecodeError as e:
        raise typer.BadParameter(f"{file.name} is not valid JSON: {e}", param_hint="--file") from e
    if not isinstance(body, dict):
        raise typer.BadParameter(f"{file.name} must hold a JSON object (an OpenAI request body)", param_hint="--file")
    is_completion = completions or ("prompt" in body and "messages" not in body)
    return ("/v1/completions" if is_completion else "/v1/chat/completions"), body


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(f"expected key=value, got '{pair}'", param_hint="--metadata")
    return dict(pair.split("=", 1) for pair in pairs) or None


@jobs_app.command()
def submit(
    prompt: Annotated[str | None, typer.Argument(help="The prompt text, or - to read it from stdin.")] = None,
    file: Annotated[typer.FileText | None, typer.Option(help="A JSON request body to send as is (- for stdin).")] = None,
    model: Annotated[str | None, typer.Option(help=f"Model to run; {DEFAULT_MODEL} unless --file names one.")] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature.")] = None,
    completions: Annotated[bool, typer.Option("--completions", help="Use /v1/completions with a prompt instead of chat messages.")] = False,
    callback_url: Annotated[str | None, typer.Option(help="URL the server POSTs the finished job to.")] = None,
    metadata: Annotated[list[str] | None, typer.Option(help="key=value kept with the job (repeatable).")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="Submitting again with this key gives the same job.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job until it finishes, then print its result.")] = False,
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False,
    tier: TierOption = None, tenant: TenantOption = None,
) -> None:
    """Submit a generation job; prints its id and status (with --wait, its result once it finishes)."""
    endpoint, body = _request(prompt, file, completions)
    # Flags given on the command line win over the same fields of a --file body.
    for key, value in (("model", model), ("max_tokens", max_tokens), ("temperature", temperature)):
        if value is not None:
            body[key] = value
    body.setdefault("model", DEFAULT_MODEL)
    payload = {"url": endpoint, "body": body, "callback_url": callback_url, "metadata": _metadata(metadata or [])}
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    server = Server(url, api_key, tier, tenant)
    payload = {k: v for k, v in payload.items() if v is not None}
    response = server.call("POST", "/v1/jobs", json=payload, headers=headers)
    job = response.json()
    if response.headers.get("Idempotent-Replayed") == "true":
        err.print(f"idempotency key {idempotency_key!r} was used before: this is the job it made", style="dim")
    if wait:
        _finish(_follow(server, job["id"], print_events=False), as_json)
    _print_job(job, as_json)


@jobs_app.command("list")
def list_jobs(
    state: Annotated[JobState | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Most jobs to show.")] = 20,
    after: Annotated[str | None, typer.Option(help="Start after this job id (where the page before ended).")] = None,
    url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False,
    tier: TierOption = None, tenant: TenantOption = None,
) -> None:
    """List jobs, newest first."""
    params: dict[str, str | int] = {"limit": limit}
    if state:
        params["state"] = state.value
    if after:
        params["after"] = after
    page = Server(url, api_key, tier, tenant).call("GET", "/v1/jobs", params=params).json()
    if as_json:
        typer.echo(json.dumps(page, indent=2))
        return
    table = Table("id", "status", "model", "tier", "attempts", "created", "position", box=box.SIMPLE_HEAD)
    table.columns[0].no_wrap = True  # an id is for copying
    for job in page["data"]:
        position = "-" if job["position"] is None else str(job["position"])
        attempts = f"{job['attempts']}/{job['max_attempts']}"
        table.add_row(job["id"], _status(job["status"]), job["model"], job["tier"], attempts, _time(job["created_at"]), position)
    out.print(table)
    if page["has_more"]:
        out.print(f"more: --after {page['last_id']}", style="dim")


@jobs_app.command()
def show(
    job_id: JobId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False,
    tier: TierOption = None, tenant: TenantOption = None,
) -> None:
    """Show one job: status, times, attempts, transitions, result or error, webhook deliveries."""
    job = Server(url, api_key, tier, tenant).call("GET", f"/v1/jobs/{job_id}").json()
    if as_json:
        typer.echo(json.dumps(job, indent=2))
        return
    rows: list[tuple[str, str | Text]] = [
        ("status", _status(job["status"])), ("model", f"{job['model']} ({job['url']})"), ("tier", job["tier"]),
        ("attempts", f"{job['attempts']} of {job['max_attempts']}"), ("created", _time(job["created_at"])),
        ("started", _time(job["started_at"])), ("finished", _time(job["finished_at"])),
    ]
    if job["position"] is not None:
        rows.append(("position", str(job["position"])))
    if job["next_attempt_at"] is not None:
        rows.append(("next attempt", _time(job["next_attempt_at"])))
    if job["progress"]:
        rows.append(("generated", f"{job['progress']['completion_tokens']} tokens"))
    rows += [(f"metadata.{key}", value) for key, value in (job["metadata"] or {}).items()]
    summary = Table.grid(padding=(0, 2))
    for key, value in rows:
        summary.add_row(Text(key, style="bold"), value)
    out.print(Text(job["id"], style="bold"), summary)
    history = Table("status", "at", "attempt", "message", title="transitions", title_justify="left", box=box.SIMPLE_HEAD)
    for t in job["transitions"]:
        history.add_row(_status(t["status"]), _time(t["at"]), str(t["attempt"]), t["message"] or "")
    out.print(history)
    if job["result"]:
        out.print(Text("result", style="bold"))
        typer.echo(_result_text(job["result"]))  # the text exactly as generated, unstyled
    if job["error"]:
        code = f" ({job['error']['code']})" if job["error"].get("code") else ""
        out.print(Text.assemble(("error: ", "bold red"), job["error"].get("message", ""), code))
    if "webhook" in job:
        title = f"webhook to {job['callback_url']}: {job['webhook']['status']}"
        deliveries = Table(
            "attempt", "at", "HTTP", "delivered", "ms", "error", title=title, title_justify="left", box=box.SIMPLE_HEAD
        )
        for d in job["webhook"]["deliveries"]:
            deliveries.add_row(
                str(d["attempt"]), _time(d["at"]), str(d["status_code"] or "-"), "yes" if d["delivered"] else "no",
                str(d["duration_ms"] or "-"), d["error"] or "",
            )
        out.print(deliveries)


@jobs_app.command()
def cancel(
    job_id: JobId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False,
    tier: TierOption = None, tenant: TenantOption = None,
) -> None:
    """Cancel a job that has not finished; prints its new status."""
    _print_job(Server(url, api_key, tier, tenant).call("DELETE", f"/v1/jobs/{job_id}").json(), as_json)


@jobs_app.command()
def retry(
    job_id: JobId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False,
    tier: TierOption = None, tenant: TenantOption = None,
) -> None:
    """Queue a failed or cancelled job again; prints its new status."""
    _print_job(Server(url, api_key, tier, tenant).call("POST", f"/v1/jobs/{job_id}/retry").json(), as_json)


@jobs_app.command()
def watch(
    job_id: JobId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False,
    tier: TierOption = None, tenant: TenantOption = None,
) -> None:
    """Follow a job until it finishes, then print its result; exits 0 completed, 1 failed, 2 cancelled.

    With --json, prints each event as a JSON line instead."""
    job = _follow(Server(url, api_key, tier, tenant), job_id, print_events=as_json)
    if as_json:
        raise typer.Exit(EXIT_CODES[job["status"]])
    _finish(job, as_json=False)
