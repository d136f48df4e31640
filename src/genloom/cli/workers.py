"""`genloom workers`: the worker processes a running deployment knows of, from the shell. An
httpx client of GET /v1/admin/workers; needs an admin key."""

from __future__ import annotations

import json

from rich import box
from rich.table import Table

from genloom.cli.jobs import DEFAULT_URL, ApiKeyOption, JsonOption, Server, UrlOption, out


def workers(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Every worker process: state (lost once its heartbeats stop), last heartbeat, and per
    model its state and occupancy."""
    data = Server(url, api_key, tier=None, tenant=None).call("GET", "/v1/admin/workers").json()["data"]
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table("worker", "host", "pid", "state", "last heartbeat", "models (state, rows used/capacity)", box=box.SIMPLE)
    for w in data:
        models = "\n".join(f"{m['model']} ({m['state']}, {m['occupancy']}/{m['capacity']})" for m in w["models"]) or "—"
        table.add_row(w["id"], w["host"], str(w["pid"]), w["state"], f"{w['seconds_since_heartbeat']:.1f} s ago", models)
    out.print(table if data else "no worker processes")
