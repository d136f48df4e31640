from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from collections.abc import Callable, Iterable

from genloom.gateway import Readiness, TextService


def build_health_router(
    readiness: Readiness, service: TextService, *, loaded: Callable[[], Iterable[str]], in_flight: Callable[[], int]
) -> APIRouter:
    """`loaded()`: the versions this process serves (`name@vN`); `in_flight()`: requests running."""
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive and its event loop answers."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Models are loaded and new work is accepted; 503 while starting or draining."""
        body = {
            "status": readiness.state.value,
            "reason": readiness.reason or None,
            "models": sorted(loaded()),
            "in_flight": in_flight(),
            "queued": await service.queued(),
        }
        return JSONResponse(body, status_code=200 if readiness.ready else 503)

    return router
