from __future__ import annotations

from collections.abc import Callable, Iterable

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from genloom.gateway import Readiness, TextService
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.readiness import WorkerStatus
from genloom.queue.protocol import QueueUnavailable


def build_health_router(
    readiness: Readiness, service: TextService, *, loaded: Callable[[], Iterable[str]], in_flight: Callable[[], int],
    workers: Callable[[], list[WorkerStatus]], presence: WorkerPresence | None = None,
) -> APIRouter:
    """`loaded()`: the versions this process serves (`name@vN`); `in_flight()`: requests running;
    `workers()`: the worker threads of this process; `presence`: on an API replica, which
    models have a live worker process."""
    router = APIRouter()

    def broken() -> list[str]:
        return [f"{w.model}: {w.reason}" for w in workers() if w.fatal]

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        """The process is alive: its event loop answers and no worker thread is dead or hung
        (a restart would help: 503)."""
        problems = broken()
        if problems:
            return JSONResponse({"status": "unhealthy", "reason": "; ".join(problems)}, status_code=503)
        return JSONResponse({"status": "ok"})

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Whether to send this process work: 503 while starting, draining, failed, with a
        worker thread dead, hung or cut off from the queue, or (an API replica) when no model
        has a live worker process. An API replica whose models have workers only in part stays
        200 and names the others in `models_without_workers`."""
        served = sorted(loaded())
        states = workers()
        try:
            queued, queue_problem = await service.queued(), None
        except QueueUnavailable as e:
            queued, queue_problem = None, str(e)
        body = {
            "status": readiness.state.value,
            "reason": readiness.reason or None,
            "models": served,
            "in_flight": in_flight(),
            "queued": queued,
            "workers": [{"model": w.model, "kind": w.kind, "state": w.state, "reason": w.reason} for w in states],
        }
        ready = readiness.ready
        # A process with workers cannot work without its queue; an API replica still serves what
        # needs none (cached answers, job lookups, the admin API): it says so in the body only.
        problems = [f"{w.model}: {w.reason}" for w in states if w.fatal or w.cut_off]
        if queue_problem is not None and states:
            problems.append(queue_problem)
        elif queue_problem is not None:
            body["queue"] = queue_problem
        if ready and problems:
            ready = False
            body["status"], body["reason"] = "degraded", "; ".join(problems)
        if presence is not None and presence.known:
            missing = presence.without_workers(served)
            body["models_without_workers"] = missing
            if ready and served and len(missing) == len(served):
                ready = False
                body["status"], body["reason"] = "no_workers", "no worker process is running any model"
        return JSONResponse(body, status_code=200 if ready else 503)

    return router
