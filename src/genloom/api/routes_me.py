"""GET /v1/me: who the presented key is (its tenant, tier and whether it is an admin key), so a
client such as the console can show what that key may do without probing admin routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from genloom.api.callers import principal


def build_me_router() -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        who = principal(request)
        return {"object": "principal", "tenant": who.tenant_id, "tenant_name": who.tenant_name, "tier": who.tier.value,
                "admin": who.is_admin, "key_id": who.key_id}

    return router
