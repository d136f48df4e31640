"""Who takes work from the shared queue: every worker process announces itself in Redis (a card
with its host, pid, models, each model's state, capacity and occupancy), renewed every
heartbeat; API replicas read the cards to know which models have a live worker, and operators
list them (`GET /v1/admin/workers`, `genloom workers`).

A card is live while it was renewed within `ttl_s`; a card not renewed for an hour is dropped by
the next reader (the process is long gone)."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import redis.asyncio as aioredis

log = logging.getLogger("genloom.queue")

_FORGET_AFTER_S = 3600.0
# A worker's model states that mean it takes jobs for the model (WorkerState values, and
# "on_demand": not loaded now, loaded when work comes).
TAKING = frozenset({"running", "queue_unavailable", "on_demand"})


@dataclass(frozen=True)
class ModelSlot:
    """One model a worker process runs."""

    model: str
    kind: str
    state: str  # a WorkerState value
    capacity: int
    occupancy: int
    reason: str | None = None
    batch_of: str | None = None  # a fine-tuned version served in this base version's batch (its adapter attached)


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
    seen_at: float = 0.0  # unix time of the last heartbeat, on Redis' clock (set by the directory)
    age_s: float = 0.0  # how long ago that was when the card was read, on the same clock

    def takes(self, model: str) -> bool:
        """Whether this worker takes jobs for `model` now (or will: once a queue outage ends, or
        by loading it when work comes, for a process that keeps only some models loaded)."""
        return self.state == "ready" and any(slot.model == model and slot.state in TAKING for slot in self.models)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, *, seen_at: float, now: float) -> WorkerCard:
        """A card as stored; fields a newer or older Genloom wrote and this one does not know are left out."""
        data: dict[str, Any] = json.loads(text)
        slot_fields = {f.name for f in fields(ModelSlot)}
        data["models"] = [ModelSlot(**{k: v for k, v in slot.items() if k in slot_fields}) for slot in data.get("models", [])]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known} | {"seen_at": seen_at, "age_s": max(0.0, now - seen_at)})


class WorkerDirectory:
    def __init__(self, *, client: aioredis.Redis, prefix: str, ttl_s: float, timeout_s: float = 5.0) -> None:
        """`client` must decode responses. Times are Redis' own (TIME), so hosts whose clocks
        disagree still agree on who is alive."""
        self._redis = client
        self._cards = f"{prefix}workers"
        self._seen = f"{prefix}workers:seen"
        self.ttl_s = ttl_s
        self._timeout_s = timeout_s

    async def _now(self) -> float:
        seconds, microseconds = await self._redis.time()
        return seconds + microseconds / 1e6

    async def announce(self, card: WorkerCard) -> None:
        async with asyncio.timeout(self._timeout_s):
            now = await self._now()
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._cards, card.id, card.to_json())
            pipe.zadd(self._seen, {card.id: now})
            await pipe.execute()

    async def withdraw(self, worker_id: str) -> None:
        async with asyncio.timeout(self._timeout_s):
            pipe = self._redis.pipeline(transaction=True)
            pipe.hdel(self._cards, worker_id)
            pipe.zrem(self._seen, worker_id)
            await pipe.execute()

    async def cards(self) -> list[WorkerCard]:
        """Every worker seen within the last hour, most recently seen first (a card this
        version cannot read is skipped, and logged)."""
        async with asyncio.timeout(self._timeout_s):
            now = await self._now()
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
        cards = []
        for (worker_id, at), text in zip(seen, texts, strict=True):
            if not text:
                continue
            try:
                cards.append(WorkerCard.from_json(text, seen_at=at, now=now))
            except (ValueError, TypeError) as e:
                log.warning("skipping worker %s's card, which this version cannot read: %s", worker_id, e)
        return cards

    def live(self, card: WorkerCard) -> bool:
        return card.age_s <= self.ttl_s

    async def live_models(self) -> dict[str, int]:
        """The models live workers take jobs for, and how many worker processes take each."""
        counts: dict[str, int] = {}
        for card in await self.cards():
            if self.live(card):
                for model in {slot.model for slot in card.models if card.takes(slot.model)}:
                    counts[model] = counts.get(model, 0) + 1
        return counts
