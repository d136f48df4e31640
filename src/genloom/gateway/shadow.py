"""Shadow traffic: a rollout's share of requests is sent again to the candidate, as background
work, after the stable version has answered the client. The mirror never changes or delays that
answer: it is queued as async work (behind every realtime request), dropped when more than
`max_in_flight` mirrors run or when the queue refuses it, and its outcome only feeds the rollout."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace

from genloom.gateway.errors import NotReady
from genloom.gateway.rate_limit import RateLimited
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.text_service import Completion, TextRequest
from genloom.queue import QueueFull, QueueUnavailable, TenantQueueFull
from genloom.jobs import Tier
from genloom.registry.catalog import Resolution
from genloom.registry.rollout import Arm, Outcome, ShadowPair

log = logging.getLogger("genloom.shadow")
SHADOW_TENANT = "genloom-shadow"
Embed = Callable[[list[str]], Awaitable[list[list[float]]]]


class ShadowMirror:
    def __init__(
        self, *, text: TextPipeline, observe: Callable[[Resolution, Outcome], None],
        record_pair: Callable[[str, ShadowPair], None], embed: Embed | None = None, max_in_flight: int = 8,
    ) -> None:
        self._text = text
        self._observe = observe
        self._record_pair = record_pair
        self._embed = embed
        self._max_in_flight = max_in_flight
        self._tasks: set[asyncio.Task] = set()
        self.dropped = 0

    def mirror(self, request: TextRequest, completion: Completion) -> None:
        resolution = request.resolution
        if resolution is None or resolution.shadow is None or resolution.rollout is None:
            return
        if len(self._tasks) >= self._max_in_flight:
            self.dropped += 1  # under load, mirrored work is the first to go
            return
        task = asyncio.get_running_loop().create_task(self._run(request, completion, resolution))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: TextRequest, stable: Completion, resolution: Resolution) -> None:
        key = resolution.shadow
        assert key is not None and resolution.rollout is not None
        mirrored = replace(
            request, id=f"shadow-{uuid.uuid4().hex}", model=key, resolution=Resolution(key, resolution.name),
            stream=False, background=True, tier=Tier.FREE, tenant=SHADOW_TENANT, key_id=None, limits={}, key_limits={},
        )
        started = time.monotonic()
        try:
            answer = await self._text.complete(mirrored, _never_disconnected)
            ok = answer.model == key
        except (QueueFull, TenantQueueFull, QueueUnavailable, NotReady, RateLimited):
            self.dropped += 1
            return
        except Exception as e:  # the candidate failed: that is what the shadow is for
            log.info("shadow request on %s failed: %s", key, e)
            answer, ok = None, False
        latency_ms = (time.monotonic() - started) * 1000
        candidate_text = answer.choices[0].text if answer and answer.choices else ""
        self._observe(
            replace(resolution, arm=Arm.CANDIDATE),
            Outcome(Arm.CANDIDATE, ok, latency_ms, None, at=time.time(), output_chars=len(candidate_text)),
        )
        stable_text = stable.choices[0].text if stable.choices else ""
        similarity = await self._similarity(stable_text, candidate_text) if ok else None
        self._record_pair(resolution.rollout, ShadowPair(
            stable_chars=len(stable_text), candidate_chars=len(candidate_text), similarity=similarity, candidate_ok=ok,
        ))

    async def _similarity(self, a: str, b: str) -> float | None:
        if self._embed is None or not a.strip() or not b.strip():
            return None
        try:
            u, v = await self._embed([a, b])
        except Exception as e:  # no embedding model served: the pair is kept without it
            log.debug("no similarity for a shadow pair: %s", e)
            return None
        norm = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
        return round(sum(x * y for x, y in zip(u, v)) / norm, 4) if norm else None

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _never_disconnected() -> bool:
    return False
