"""GET /v1/usage: the rolling usage series the console charts (store/usage.py). An admin key sees
every tenant (or one, with `tenant`); a tenant key sees its own tenant's requests only (and each
model's queue depth)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from genloom.api.callers import principal
from genloom.store.usage import UsageSeries

# window → (seconds, step): about 60 points a chart.
WINDOWS = {"1h": (3600, 60), "6h": (6 * 3600, 360), "24h": (86400, 1440)}


def build_usage_router(usage: UsageSeries) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/usage")
    async def get_usage(
        request: Request, window: Literal["1h", "6h", "24h"] = "1h",
        model: str | None = Query(None, max_length=255), tenant: str | None = Query(None, max_length=128),
    ) -> dict[str, Any]:
        who = principal(request)
        if not who.is_admin:
            tenant = who.tenant_id
        window_s, step_s = WINDOWS[window]
        answer = await usage.query(window_s=window_s, step_s=step_s, model=model, tenant=tenant)
        if not who.is_admin:
            answer["tenants"] = [who.tenant_id]
        return answer | {"window": window, "tenant": tenant, "model": model}

    return router
