"""`genloom models …`: the model registry of a running server (versions, aliases, history,
rollouts), from the shell. An httpx client of /v1/admin/models; needs an admin key."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from genloom.cli.jobs import DEFAULT_URL, ApiKeyOption, JsonOption, Server, UrlOption, out

models_app = typer.Typer(help="Model versions, aliases and rollouts (needs an admin key).", no_args_is_help=True)
rollout_app = typer.Typer(help="Start, watch, promote or roll back a model's rollout.", no_args_is_help=True)
models_app.add_typer(rollout_app, name="rollout")

Name = Annotated[str, typer.Argument(help="The model's name.")]


def _server(url: str, api_key: str | None) -> Server:
    return Server(url, api_key, tier=None, tenant=None)


def _show(data: Any, as_json: bool, line: str) -> None:
    out.print_json(json.dumps(data)) if as_json else out.print(line)


def _when(unix: int) -> str:
    return datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M:%S")


@models_app.command("list")
def list_models(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Every model with its versions, their state, and where its aliases point."""
    data = _server(url, api_key).call("GET", "/v1/admin/models").json()["data"]
    table = Table("version", "kind", "state", "aliases", "created by", "created", "loaded here", box=box.SIMPLE)
    for model in data:
        for v in model["versions"]:
            table.add_row(v["id"], v["kind"], v["state"], ", ".join(v["aliases"]) or "—", v["created_by"],
                          _when(v["created_at"]), "yes" if v["loaded_here"] else "no")
    out.print_json(json.dumps(data)) if as_json else out.print(table)


@models_app.command("register")
def register(
    name: Name,
    path: Annotated[Path | None, typer.Option(help="A local model directory (HF, diffusers or sentence-transformers).")] = None,
    kind: Annotated[str, typer.Option(help="text, image, embedding or remote.")] = "text",
    base_url: Annotated[str | None, typer.Option(help="remote: the upstream's URL up to /v1.")] = None,
    upstream_model: Annotated[str | None, typer.Option(help="remote: the upstream's name for it.")] = None,
    upstream_key: Annotated[str | None, typer.Option(envvar="GENLOOM_UPSTREAM_KEY", help="remote: its API key.")] = None,
    alias: Annotated[list[str] | None, typer.Option(help="Point this alias at the new version (repeatable).")] = None,
    note: Annotated[str | None, typer.Option(help="A note kept in the version's metadata.")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a new version of NAME; it loads in the background, without a restart."""
    body: dict[str, Any] = {"name": name, "kind": kind, "aliases": alias or [], "metadata": {"notes": note} if note else {}}
    if path is not None:
        body["path"] = str(path.expanduser().resolve())
    for key, value in (("base_url", base_url), ("upstream_model", upstream_model), ("api_key", upstream_key)):
        if value is not None:
            body[key] = value
    version = _server(url, api_key).call("POST", "/v1/admin/models", json=body).json()
    _show(version, as_json, f"{version['id']}\t{version['state']}\t{version['revision'][:12]}")


@models_app.command("alias")
def set_alias(
    name: Name,
    alias: Annotated[str, typer.Argument(help="production, staging, or any name.")],
    version: Annotated[str, typer.Argument(help="The version it points at: v1, v2, ...")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Point an alias at a version (production moves only when no rollout is active)."""
    moved = _server(url, api_key).call("PUT", f"/v1/admin/models/{name}/aliases/{alias}", json={"version": version}).json()
    out.print(f"{name}@{alias}\t{moved['previous'] or '—'} -> {moved['version']}")


@models_app.command("retire")
def retire(
    name: Name, version: Annotated[str, typer.Argument(help="v1, v2, ...")], url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Retire a version: it is unloaded and never serves again (refused while an alias or rollout uses it)."""
    retired = _server(url, api_key).call("DELETE", f"/v1/admin/models/{name}/versions/{version}").json()
    out.print(f"{retired['id']}\t{retired['state']}")


@models_app.command("history")
def history(
    name: Name,
    at: Annotated[datetime | None, typer.Option(help="Also say which version each alias pointed at then (UTC).")] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Every change to NAME: who, when, before and after."""
    params = {"at": at.isoformat() + ("Z" if at.tzinfo is None else "")} if at else {}
    data = _server(url, api_key).call("GET", f"/v1/admin/models/{name}/history", params=params).json()
    table = Table("at", "action", "actor", "before", "after", box=box.SIMPLE)
    for e in data["data"]:
        table.add_row(e["at"], e["action"], e["actor"], json.dumps(e["before"]) if e["before"] else "—",
                      json.dumps(e["after"]) if e["after"] else "—")
    if as_json:
        out.print_json(json.dumps(data))
        return
    out.print(table)
    if "aliases_at" in data:
        out.print(f"at {data['aliases_at']['at']}: " + ", ".join(f"{a} -> {v}" for a, v in data["aliases_at"]["aliases"].items()))


@rollout_app.command("start")
def rollout_start(
    name: Name,
    candidate: Annotated[str, typer.Option(help="The version to roll out: v2, ...")],
    strategy: Annotated[str, typer.Option(help="canary, shadow or blue_green.")] = "canary",
    percent: Annotated[float, typer.Option(min=0.001, max=100)] = 10,
    steps: Annotated[str | None, typer.Option(help="canary steps in percent, e.g. 5,25,50,100")] = None,
    sticky_by: Annotated[str, typer.Option(help="user, tenant or none.")] = "none",
    min_requests: Annotated[int, typer.Option(min=1, help="Requests per arm before a gate decides.")] = 50,
    max_error_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.02,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a rollout of CANDIDATE against NAME's production version."""
    body: dict[str, Any] = {"strategy": strategy, "candidate": candidate, "percent": percent, "sticky_by": sticky_by,
                            "gates": {"min_requests": min_requests, "max_error_rate": max_error_rate}}
    if steps:
        try:
            body["steps"] = [float(s) for s in steps.split(",")]
        except ValueError:
            raise typer.BadParameter(f"steps must be numbers separated by commas, not {steps!r}", param_hint="--steps") from None
    started = _server(url, api_key).call("POST", f"/v1/admin/models/{name}/rollouts", json=body).json()
    _show(started, as_json, f"{started['id']}\t{started['strategy']}\t{started['candidate']}\t{started['state']}")


@rollout_app.command("status")
def rollout_status(name: Name, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """The active rollout: state, percent, and the figures its gates see."""
    r = _server(url, api_key).call("GET", f"/v1/admin/models/{name}/rollouts/current").json()
    figures = r["figures"] or {}
    arms = ", ".join(
        f"{arm}: {f['requests']} requests, {f['error_rate']:.1%} errors, p50 {f['p50_latency_ms']} ms"
        for arm, f in figures.items() if isinstance(f, dict) and "requests" in f
    )
    _show(r, as_json, f"{r['id']}\t{r['strategy']}\t{r['state']}\t{r['percent']}%\t{arms or 'no figures yet'}")


def _end(name: str, action: str, reason: str | None, url: str, api_key: str | None) -> None:
    done = _server(url, api_key).call("POST", f"/v1/admin/models/{name}/rollouts/current/{action}",
                                      json={"reason": reason} if reason else None).json()
    out.print(f"{done['id']}\t{done['state']}\t{done['reason']}")


@rollout_app.command("promote")
def rollout_promote(name: Name, reason: Annotated[str | None, typer.Option()] = None, url: UrlOption = DEFAULT_URL,
                    api_key: ApiKeyOption = None) -> None:
    """Promote the candidate now: production points at it."""
    _end(name, "promote", reason, url, api_key)


@rollout_app.command("rollback")
def rollout_rollback(name: Name, reason: Annotated[str | None, typer.Option()] = None, url: UrlOption = DEFAULT_URL,
                     api_key: ApiKeyOption = None) -> None:
    """Roll back now: every request goes to the stable version (a blue-green switch is undone)."""
    _end(name, "rollback", reason, url, api_key)
