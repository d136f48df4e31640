"""`genloom datasets …`: build, list, show and export datasets on a running server (admin key)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from genloom.cli.jobs import DEFAULT_URL, ApiKeyOption, JsonOption, Server, UrlOption, _fail, out

datasets_app = typer.Typer(help="Build and read versioned fine-tuning datasets (needs an admin key).", no_args_is_help=True)


def _server(url: str, api_key: str | None) -> Server:
    return Server(url, api_key, tier=None, tenant=None)


def _source(given: str, server: Server) -> dict[str, Any]:
    """feedback, requests, or a local JSONL file (uploaded first, purpose fine-tune)."""
    if given in ("feedback", "requests"):
        return {"type": given}
    path = Path(given)
    if not path.is_file():
        _fail(f"--from is 'feedback', 'requests' or a JSONL file; {given!r} is none of them")
    with path.open("rb") as f:
        uploaded = server.call("POST", "/v1/files", data={"purpose": "fine-tune"}, files={"file": (path.name, f)}).json()
    return {"type": "file", "file_id": uploaded["id"]}


@datasets_app.command("build")
def build(
    name: Annotated[str, typer.Argument(help="The dataset's name; each build with new rows is its next version.")],
    source: Annotated[str, typer.Option("--from", help="feedback, requests, or a JSONL file in OpenAI's chat fine-tuning format")],
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's data (default: every tenant's).")] = None,
    model: Annotated[str | None, typer.Option(help="Only this model's answers (a name covers all its versions).")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only data from this time on (e.g. 2026-12-01).")] = None,
    min_score: Annotated[float, typer.Option(min=0, max=1, help="feedback: keep ratings scored at least this (0..1)")] = 0.75,
    eval_fraction: Annotated[float, typer.Option(min=0, max=0.99)] = 0.1,
    seed: int = 0,
    near_duplicates: Annotated[float, typer.Option(min=0.01, max=1, help="MinHash similarity that counts as a duplicate (1: exact only)")] = 0.85,
    scrub_pii: Annotated[bool, typer.Option(help="Replace PII with placeholders.")] = True,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build a dataset version: select, clean, deduplicate, scrub PII, split; print its counts."""
    server = _server(url, api_key)
    src = _source(source, server) | {"tenant": tenant, "model": model, "min_score": min_score,
                                     "since": int(since.timestamp()) if since else None}
    body = {"name": name, "source": {k: v for k, v in src.items() if v is not None},
            "settings": {"eval_fraction": eval_fraction, "seed": seed, "near_duplicate_threshold": near_duplicates,
                         "scrub_pii": scrub_pii}}
    d = server.call("POST", "/v1/admin/datasets", json=body).json()
    if as_json:
        out.print_json(json.dumps(d))
        return
    m = d["manifest"]
    out.print(f"{d['id']}: {d['rows']} rows, {'new' if d['created'] else 'unchanged (same rows as this version)'}")
    out.print("  " + ", ".join(f"{step} {n}" for step, n in m["counts"].items()))
    if m["dropped"]:
        out.print("  dropped: " + ", ".join(f"{why} {n}" for why, n in m["dropped"].items()))
    for e in m.get("errors") or []:
        out.print(f"  line {e['line']}: {e['error']}")


@datasets_app.command("list")
def list_datasets(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Every dataset version: rows, status, content hash."""
    data = _server(url, api_key).call("GET", "/v1/admin/datasets").json()["data"]
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("dataset", "rows", "train", "eval", "status", "sha256", "created", box=box.SIMPLE)
    for d in data:
        c = d["manifest"].get("counts", {})
        table.add_row(d["id"], str(d["rows"]), str(c.get("train", "")), str(c.get("eval", "")), d["status"],
                      d["sha256"][:12], datetime.fromtimestamp(d["created_at"]).strftime("%Y-%m-%d %H:%M"))
    out.print(table)


@datasets_app.command("show")
def show(ref: Annotated[str, typer.Argument(help="NAME (its newest version) or NAME@vN")],
         url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """A version with its manifest (JSON)."""
    out.print_json(json.dumps(_server(url, api_key).call("GET", f"/v1/admin/datasets/{ref}").json()))


@datasets_app.command("export")
def export(ref: Annotated[str, typer.Argument(help="NAME or NAME@vN")],
           output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the JSONL.")],
           split: Annotated[str, typer.Option(help="train or eval")] = "train",
           url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None) -> None:
    """Write a split as JSONL in OpenAI's chat fine-tuning format."""
    data = _server(url, api_key).call("GET", f"/v1/admin/datasets/{ref}/content", params={"split": split}).content
    output.write_bytes(data)
    lines = data.count(b"\n")
    out.print(f"{output}: {lines} lines")
