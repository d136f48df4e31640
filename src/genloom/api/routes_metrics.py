"""GET /metrics: the process's metrics in Prometheus' text format, for a scraper. Optionally
behind a bearer token (`metrics.token`), compared in constant time."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from fastapi import APIRouter, Request
from fastapi.responses import Response

from genloom.api.errors import error_response

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def build_metrics_router(exposition: Callable[[], bytes], *, token: str | None) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                return error_response(401, "/metrics needs the metrics token: Authorization: Bearer <metrics.token>",
                                      "invalid_request_error", None, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
        # Gauges read the queue (a Redis round trip when shared): off the event loop.
        return Response(await asyncio.to_thread(exposition), media_type=CONTENT_TYPE)

    return router
