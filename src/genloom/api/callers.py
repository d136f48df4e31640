"""Who is calling: the API key's principal (tenant, tier, scope), set on the request by the
`authenticate` dependency that guards every /v1 route.

With `auth: disabled` every caller is an anonymous admin of the tenant named by the
X-Genloom-Tenant header (and the tier of X-Genloom-Tier) when `classification.trust_tier_header`
allows it, else of the configured defaults."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from genloom.config import AuthMode, ClassificationSettings
from genloom.gateway.auth import Authenticator, PermissionDenied, Principal, Scope
from genloom.gateway.errors import InvalidRequest
from genloom.jobs import Tier
from genloom.telemetry.logs import bind

TIER_HEADER = "x-genloom-tier"
TENANT_HEADER = "x-genloom-tenant"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")


@dataclass(frozen=True)
class Caller:
    tier: Tier
    tenant: str
    key_id: str | None = None
    limits: dict[str, int] = field(default_factory=dict)
    key_limits: dict[str, int] = field(default_factory=dict)
    guardrails: dict[str, Any] = field(default_factory=dict)  # the tenant's guard policy overrides
    keep_content: bool = True  # False: the tenant opted out of keeping prompts and answers


def authentication(
    *, mode: AuthMode, authenticator: Authenticator, classification: ClassificationSettings
) -> Callable[[Request], Awaitable[None]]:
    """The dependency that puts the caller's Principal on request.state (401 when it cannot)."""

    async def authenticate(request: Request) -> None:
        if mode is AuthMode.DISABLED:
            tier, tenant = _from_headers(request, classification)
            request.state.principal = Principal(
                tenant_id=tenant, tenant_name=tenant, tier=tier, scope=Scope.ADMIN, limits={}
            )
        else:
            request.state.principal = await authenticator.authenticate(request.headers.get("authorization"))
        bind(tenant=request.state.principal.tenant_id)  # on every log line from here on

    return authenticate


async def require_admin(request: Request) -> None:
    if not principal(request).is_admin:
        raise PermissionDenied("this route needs an admin key; tenant keys cannot manage tenants, keys or models")


def principal(request: Request) -> Principal:
    return request.state.principal


def caller(request: Request) -> Caller:
    """The tier and tenant a request is scheduled and accounted under."""
    who = principal(request)
    return Caller(
        tier=who.tier, tenant=who.tenant_id, key_id=who.key_id, limits=dict(who.limits), key_limits=dict(who.key_limits),
        guardrails=who.guardrails, keep_content=who.keep_content,
    )


def _from_headers(request: Request, settings: ClassificationSettings) -> tuple[Tier, str]:
    tier, tenant = settings.default_tier, settings.default_tenant
    if settings.trust_tier_header:
        tier = request.headers.get(TIER_HEADER, tier).strip().lower()
        tenant = request.headers.get(TENANT_HEADER, tenant).strip()
    if tier not in {t.value for t in Tier}:
        raise InvalidRequest(f"{TIER_HEADER} must be one of premium, standard, free; got '{tier}'", TIER_HEADER)
    if not _TENANT.match(tenant):
        raise InvalidRequest(
            f"{TENANT_HEADER} must be 1-128 letters, digits or ._:@- starting with a letter or digit", TENANT_HEADER
        )
    return Tier(tier), tenant
