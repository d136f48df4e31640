"""Who is calling: the tier and tenant a request is scheduled under.

Until tenants and API keys exist, they come from the X-Genloom-Tier and X-Genloom-Tenant headers
when `classification.trust_tier_header` allows it, else from the configured defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import Request

from genloom.config import ClassificationSettings
from genloom.gateway.errors import InvalidRequest
from genloom.queue import Tier

TIER_HEADER = "x-genloom-tier"
TENANT_HEADER = "x-genloom-tenant"
_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@\-]{0,127}$")


@dataclass(frozen=True)
class Caller:
    tier: Tier
    tenant: str


def caller(request: Request, settings: ClassificationSettings) -> Caller:
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
    return Caller(tier=Tier(tier), tenant=tenant)
