"""Who takes work from the shared queue: every worker process announces itself in Redis (a card
with its host, pid, models, each model's state, capacity and occupancy), renewed every
heartbeat; API replicas read the cards to know which models have a live worker, and operators
list them (`GET /v1/admin/workers`, `genloom workers`).

A card is live while it was renewed within `ttl_s`; a card not renewed for an hour is dropped by
the next reader (the process is long gone)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis.asyncio as aioredis

_FORGET_AFTER_S = 3600.0


@dataclass(frozen=True)
class ModelSlot:
    """One model a worker process runs."""

    model: str
    kind: str
    state: str  # a WorkerState value
    capacity: int
    occupancy: int
    reason: str | None = None


@dataclass(frozen=True)
class WorkerCard:
    id: str
    host: str
    pid: int
    version: str
    started_at: float  # unix time
    state: str  # the process's: starting, ready, draining, failed
    models: list[ModelSlot] = field(default_factory=list)
    health_url: str | None = None
    seen_at: float = 0.0  # unix time of the last heartbeat (set by the directory)

    def takes(self, model: str) -> bool:
        """Whether this worker takes jobs for `model` now (or will once a queue outage ends)."""
        return self.state == "ready" and any(
            slot.model == model and slot.state in ("running", "queue_unavailable") for slot in self.models
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, seen_at: float) -> WorkerCard:
        data: dict[str, Any] = json.loads(text)
        data["models"] = [ModelSlot(**slot) for slot in data.get("models", [])]
        data["seen_at"] = seen_at
        return cls(**data)


class WorkerDirectory:
    def __init__(
        self, *, client: aioredis.Redis, prefix: str, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        """`client` must decode responses."""
        self._redis = client
        self._cards = f"{prefix}workers"
        self._seen = f"{prefix}workers:seen"
        self.ttl_s = ttl_s
        self._clock = clock

    async def announce(self, card: WorkerCard) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._cards, card.id, card.to_json())
        pipe.zadd(self._seen, {card.id: self._clock()})
        await pipe.execute()

    async def withdraw(self, worker_id: str) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hdel(self._cards, worker_id)
        pipe.zrem(self._seen, worker_id)
        await pipe.execute()

    async def cards(self) -> list[WorkerCard]:
        """Every worker seen within the last hour, most recently seen first."""
        now = self._clock()
        gone = await self._redis.zrangebyscore(self._seen, "-inf", now - _FORGET_AFTER_S)
        if gone:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._cards, *gone)
            pipe.zrem(self._seen, *gone)
            await pipe.execute()
        seen = await self._redis.zrevrange(self._seen, 0, -1, withscores=True)
        if not seen:
            return []
        texts = await self._redis.hmget(self._cards, [worker_id for worker_id, _ in seen])
        return [WorkerCard.from_json(text, at) for (_, at), text in zip(seen, texts, strict=True) if text]

    def live(self, card: WorkerCard) -> bool:
        return self._clock() - card.seen_at <= self.ttl_s

    async def live_models(self) -> dict[str, int]:
        """The models live workers take jobs for, and how many worker processes take each."""
        counts: dict[str, int] = {}
        for card in await self.cards():
            if self.live(card):
                for model in {slot.model for slot in card.models if card.takes(slot.model)}:
                    counts[model] = counts.get(model, 0) + 1
        return counts
