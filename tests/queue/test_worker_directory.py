"""The worker processes' cards in the real Redis: announced, read back live with an age on
Redis' own clock, counted per model, withdrawn; a card from another Genloom version (extra
fields) is read, a garbled one is skipped; a model kept loaded on demand counts as taken."""

from __future__ import annotations

import asyncio
import json

import redis.asyncio as aioredis

from genloom.queue.workers import ModelSlot, WorkerCard, WorkerDirectory
from tests.services import REDIS, REDIS_TIMEOUTS


def card(worker_id: str, *slots: tuple[str, str], state: str = "ready") -> WorkerCard:
    return WorkerCard(
        id=worker_id, host="h", pid=1, version="0.1.0", started_at=0.0, state=state,
        models=[ModelSlot(model=m, kind="text", state=s, capacity=8, occupancy=0) for m, s in slots],
    )


def test_cards_live_counts_and_withdrawal(redis_prefix):
    async def scenario() -> None:
        client = aioredis.Redis.from_url(REDIS, decode_responses=True, **REDIS_TIMEOUTS)
        directory = WorkerDirectory(client=client, prefix=redis_prefix, ttl_s=2.0)
        try:
            await directory.announce(card("w1", ("a@v1", "running"), ("b@v1", "on_demand")))
            await directory.announce(card("w2", ("a@v1", "queue_unavailable"), ("c@v1", "dead")))
            await directory.announce(card("w3", ("d@v1", "running"), state="draining"))
            cards = await directory.cards()
            assert {c.id for c in cards} == {"w1", "w2", "w3"}
            assert all(directory.live(c) and 0 <= c.age_s < 2.0 for c in cards)
            # Dead slots and draining processes take nothing; on_demand and a queue outage do.
            assert await directory.live_models() == {"a@v1": 2, "b@v1": 1}

            # A card written by another version, with a field this one does not know, is read.
            stored = json.loads(card("w4", ("e@v1", "running")).to_json())
            stored["gpu"] = {"name": "H200"}
            stored["models"][0]["extra"] = 1
            await client.hset(f"{redis_prefix}workers", "w4", json.dumps(stored))
            seconds, micros = await client.time()
            await client.zadd(f"{redis_prefix}workers:seen", {"w4": seconds + micros / 1e6})
            await client.hset(f"{redis_prefix}workers", "w5", "{not json")
            await client.zadd(f"{redis_prefix}workers:seen", {"w5": seconds + micros / 1e6})
            assert (await directory.live_models())["e@v1"] == 1
            assert "w5" not in {c.id for c in await directory.cards()}

            await asyncio.sleep(2.2)  # past ttl_s: listed, but not live
            assert not any(directory.live(c) for c in await directory.cards())
            assert await directory.live_models() == {}
            await directory.withdraw("w1")
            assert "w1" not in {c.id for c in await directory.cards()}
        finally:
            await client.aclose()

    asyncio.run(scenario())
