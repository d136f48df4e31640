"""`genloom tenants …` and `genloom keys …`: the admin API of a running server, from the shell."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table

from genloom.cli.jobs import DEFAULT_URL, ApiKeyOption, JsonOption, Server, UrlOption, out
from genloom.jobs import Tier

tenants_app = typer.Typer(help="Manage tenants (needs an admin key).", no_args_is_help=True)
keys_app = typer.Typer(help="Manage API keys (needs an admin key).", no_args_is_help=True)

TenantId = Annotated[str, typer.Argument(help="The tenant's id (ten_... or 'default').")]
Limit = Annotated[int | None, typer.Option(min=1)]


def _server(url: str, api_key: str | None) -> Server:
    return Server(url, api_key, tier=None, tenant=None)


def _when(unix: int | None) -> str:
    return "—" if unix is None else datetime.fromtimestamp(unix).strftime("%Y-%m-%d %H:%M")


def _limits(rpm: int | None, tpm: int | None, tpd: int | None, ipd: int | None) -> dict[str, int]:
    given = {"requests_per_minute": rpm, "tokens_per_minute": tpm, "tokens_per_day": tpd, "images_per_day": ipd}
    return {name: value for name, value in given.items() if value is not None}


def _print(data: Any, as_json: bool, table: Table) -> None:
    if as_json:
        out.print_json(json.dumps(data))
    else:
        out.print(table)


@tenants_app.command("create")
def create_tenant(
    name: Annotated[str, typer.Argument(help="A unique name: letters, digits, . _ -")],
    tier: Annotated[Tier, typer.Option(help="Scheduling tier.")] = Tier.FREE,
    rpm: Limit = None,
    tpm: Limit = None,
    tokens_per_day: Limit = None,
    images_per_day: Limit = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a tenant with a tier and limits (requests/min, tokens/min, tokens/day, images/day)."""
    body = {"name": name, "tier": tier.value, "limits": _limits(rpm, tpm, tokens_per_day, images_per_day)}
    tenant = _server(url, api_key).call("POST", "/v1/admin/tenants", json=body).json()
    out.print_json(json.dumps(tenant)) if as_json else out.print(f"{tenant['id']}\t{tenant['name']}\t{tenant['tier']}")


@tenants_app.command("list")
def list_tenants(url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False) -> None:
    """Every tenant with its tier and limits."""
    data = _server(url, api_key).call("GET", "/v1/admin/tenants").json()["data"]
    table = Table("id", "name", "tier", "limits", "created", box=box.SIMPLE)
    for t in data:
        limits = ", ".join(f"{k}={v}" for k, v in t["limits"].items()) or "unlimited"
        table.add_row(t["id"], t["name"], t["tier"], limits, _when(t["created_at"]))
    _print(data, as_json, table)


@tenants_app.command("update")
def update_tenant(
    tenant_id: TenantId,
    tier: Annotated[Tier | None, typer.Option(help="New scheduling tier.")] = None,
    rpm: Limit = None,
    tpm: Limit = None,
    tokens_per_day: Limit = None,
    images_per_day: Limit = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change a tenant's tier, or replace its limits (the limits given are the new set)."""
    body: dict[str, Any] = {}
    if tier is not None:
        body["tier"] = tier.value
    limits = _limits(rpm, tpm, tokens_per_day, images_per_day)
    if limits:
        body["limits"] = limits
    tenant = _server(url, api_key).call("PATCH", f"/v1/admin/tenants/{tenant_id}", json=body).json()
    out.print_json(json.dumps(tenant)) if as_json else out.print(f"{tenant['id']}\t{tenant['tier']}\t{tenant['limits']}")


@keys_app.command("create")
def create_key(
    tenant_id: TenantId,
    name: Annotated[str, typer.Option(help="What the key is for.")] = "key",
    admin: Annotated[bool, typer.Option("--admin", help="Admin scope: may manage tenants and keys.")] = False,
    expires_in_days: Annotated[float | None, typer.Option(min=0.0001)] = None,
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a key for a tenant and print it: it is shown this once, then only its prefix."""
    body = {"name": name, "scope": "admin" if admin else "tenant", "expires_in_days": expires_in_days}
    key = _server(url, api_key).call("POST", f"/v1/admin/tenants/{tenant_id}/keys", json=body).json()
    out.print_json(json.dumps(key)) if as_json else out.print(key["key"])


@keys_app.command("list")
def list_keys(
    tenant_id: TenantId, url: UrlOption = DEFAULT_URL, api_key: ApiKeyOption = None, as_json: JsonOption = False
) -> None:
    """A tenant's keys by prefix, with scope, expiry and revocation."""
    data = _server(url, api_key).call("GET", f"/v1/admin/tenants/{tenant_id}/keys").json()["data"]
    table = Table("id", "prefix", "name", "scope", "created", "expires", "revoked", box=box.SIMPLE)
    for k in data:
        table.add_row(k["id"], k["prefix"] + "…", k["name"], k["scope"], _when(k["created_at"]),
                      _when(k["expires_at"]), _when(k["revoked_at"]))
    _print(data, as_json, table)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...), from `genloom keys list`.")],
    url: UrlOption = DEFAULT_URL,
    api_key: ApiKeyOption = None,
) -> None:
    """Revoke a key: it stops working at once on this server."""
    key = _server(url, api_key).call("DELETE", f"/v1/admin/keys/{key_id}").json()
    out.print(f"{key['id']}\trevoked")
