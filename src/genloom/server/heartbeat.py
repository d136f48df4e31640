"""The cluster's view of its workers, kept by each process: a process that runs workers
announces its card every `queue.heartbeat_s` (and withdraws it when it stops); an API replica
reads the cards as often to know which models have a live worker (`WorkerPresence`). Both go
on through Redis outages: the announcer tries again at the next beat, the reader refuses
nothing for want of a worker until it can read again."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any


from genloom import __version__
from genloom.gateway import Readiness
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.readiness import WorkerStatus
from genloom.queue.workers import ModelSlot, WorkerCard, WorkerDirectory
from genloom.worker import Worker, WorkerState
from genloom.worker.adapter_worker import AdapterWorker

log = logging.getLogger("genloom.server")


class ProcessCard:
    """This process as its card says it: who it is, and its workers as they are now."""

    def __init__(
        self, *, worker_id: str, readiness: Readiness, workers: Callable[[], list[Worker]],
        on_demand: Callable[[], list[tuple[str, str]]] = list,
    ) -> None:
        self.worker_id = worker_id
        self.health_url: str | None = None  # set once the health port is bound
        self._readiness = readiness
        self._workers = workers
        self._on_demand = on_demand
        self._started_at = time.time()

    def card(self) -> WorkerCard:
        slots = []
        for worker in self._workers():
            health = worker.health()
            slots.append(ModelSlot(
                model=worker.model, kind=worker.kind, state=health.state.value, capacity=worker.capacity,
                occupancy=worker.occupancy, reason=health.reason,
                batch_of=worker.base.model if isinstance(worker, AdapterWorker) else None,
            ))
        for model, kind in self._on_demand():  # not loaded now: loaded when work for it comes
            slots.append(ModelSlot(model=model, kind=kind, state="on_demand", capacity=0, occupancy=0))
        return WorkerCard(
            id=self.worker_id, host=socket.gethostname(), pid=os.getpid(), version=__version__,
            started_at=self._started_at, state=self._readiness.state.value, models=slots, health_url=self.health_url,
            seen_at=time.time(),
        )


async def announce(directory: WorkerDirectory, card: ProcessCard, every_s: float) -> None:
    """Renew this process's card until cancelled; then withdraw it (a drained worker is gone at once)."""
    failing = False
    try:
        while True:
            try:
                await directory.announce(card.card())
                if failing:
                    log.info("worker heartbeat: Redis answers again")
                failing = False
            except Exception as e:  # Redis away or slow; a heartbeat must never end for good
                if not failing:
                    log.warning("worker heartbeat: could not announce this worker (%s); trying again", _why(e))
                failing = True
            await asyncio.sleep(every_s)
    finally:
        try:
            await asyncio.wait_for(asyncio.shield(directory.withdraw(card.worker_id)), 2)
        except Exception:
            pass  # the card runs out by itself


async def follow_presence(directory: WorkerDirectory, presence: WorkerPresence, every_s: float) -> None:
    """Keep `presence` current until cancelled; through an outage it knows nothing (the queue
    answers for itself then: 503 queue_unavailable)."""
    failing = False
    while True:
        try:
            presence.update(await directory.live_models())
            failing = False
        except Exception as e:  # Redis away or slow
            if not failing:
                log.warning(
                    "could not read the workers' heartbeats (%s); refusing nothing for want of a worker until they can be read",
                    _why(e),
                )
            presence.forget()
            failing = True
        await asyncio.sleep(every_s)


def statuses(workers: list[Worker]) -> list[WorkerStatus]:
    """The health routes' view of this process's worker threads."""
    out = []
    for worker in workers:
        health = worker.health()
        out.append(WorkerStatus(
            model=worker.model, kind=worker.kind, state=health.state.value, reason=health.reason,
            fatal=health.state in (WorkerState.DEAD, WorkerState.STALLED),
            cut_off=health.state is WorkerState.QUEUE_UNAVAILABLE,
        ))
    return out


def _why(e: BaseException) -> str:
    return str(e) or type(e).__name__


def describe(card: WorkerCard, *, live: bool) -> dict[str, Any]:
    """A card as `GET /v1/admin/workers` shows it."""
    return {
        "id": card.id, "object": "worker", "host": card.host, "pid": card.pid, "version": card.version,
        "state": card.state if live else "lost", "live": live, "started_at": int(card.started_at),
        "last_heartbeat_at": round(card.seen_at, 3), "seconds_since_heartbeat": round(card.age_s, 3),
        "health_url": card.health_url,
        "models": [
            {"model": s.model, "kind": s.kind, "state": s.state, "capacity": s.capacity, "occupancy": s.occupancy,
             "reason": s.reason, "batch_of": s.batch_of}
            for s in card.models
        ],
    }


async def list_workers(directory: WorkerDirectory | None, local: ProcessCard) -> list[dict[str, Any]]:
    """Every worker process the cluster knows of (this one alone when the queue is not shared)."""
    if directory is None:
        card = local.card()
        return [describe(card, live=True)] if card.models else []
    return [describe(card, live=directory.live(card)) for card in await directory.cards()]
