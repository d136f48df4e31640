"""A rollout's outcome window shared by every API replica through Redis, so the gates judge all
of the traffic and not one replica's share. Outcomes are counted in time buckets (one hash per
arm and bucket: requests, errors, latency and time-to-first-token histograms), which expire
after the window; the candidate's requests per step are one counter each."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import redis.asyncio as aioredis

from genloom.registry.rollout import Arm, ArmFigures, Outcome, WindowFigures, bin_quantile, latency_bin

log = logging.getLogger("genloom.rollouts")
_BUCKETS = 60  # a window is read as this many buckets
_STEP_TTL_S = 7 * 86_400
_MAX_PENDING = 10_000


class RedisOutcomes:
    shared = True

    def __init__(self, *, client: aioredis.Redis, prefix: str, rollout_id: str, window_s: float) -> None:
        self._client = client
        self._key = f"{prefix}rollout:{rollout_id}"
        self._window_s = window_s
        self._bucket_s = max(1.0, window_s / _BUCKETS)
        self._pending: list[tuple[Outcome, int]] = []
        self._flusher: asyncio.Task | None = None

    def add(self, outcome: Outcome, step: int) -> None:
        """Count an outcome: buffered, and written with whatever else arrived meanwhile in one
        pipeline, by one task at a time (a burst of requests costs one connection, not one each)."""
        if len(self._pending) >= _MAX_PENDING:
            self._pending.pop(0)  # Redis is away: keep the newest, bounded
        self._pending.append((outcome, step))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            pipe = self._client.pipeline(transaction=False)
            for o, step in batch:
                key = f"{self._key}:{o.arm.value}:{int(o.at // self._bucket_s)}"
                pipe.hincrby(key, "n", 1)
                if o.ok:
                    pipe.hincrby(key, f"l{latency_bin(o.latency_ms)}", 1)
                    if o.ttft_ms is not None:
                        pipe.hincrby(key, f"t{latency_bin(o.ttft_ms)}", 1)
                else:
                    pipe.hincrby(key, "err", 1)
                pipe.expire(key, int(self._window_s + 2 * self._bucket_s) + 1)
                if o.arm is Arm.CANDIDATE:
                    pipe.incr(f"{self._key}:step:{step}")
                    pipe.expire(f"{self._key}:step:{step}", _STEP_TTL_S)
            try:
                await pipe.execute()
            except aioredis.RedisError as e:  # figures are best effort; serving goes on
                log.warning("could not count %d rollout outcomes in Redis: %s", len(batch), e)
                return

    async def snapshot(self, now: float, step: int) -> WindowFigures:
        """Every replica's outcomes of the last `window_s` seconds (whole buckets)."""
        if self._flusher is not None:  # this replica's own outcomes first
            await asyncio.shield(self._flusher)
        last = int(now // self._bucket_s)
        first = int((now - self._window_s) // self._bucket_s) + 1
        pipe = self._client.pipeline(transaction=False)
        for arm in (Arm.CANDIDATE, Arm.STABLE):
            for bucket in range(first, last + 1):
                pipe.hgetall(f"{self._key}:{arm.value}:{bucket}")
        pipe.get(f"{self._key}:step:{step}")
        replies = await pipe.execute()
        width = last - first + 1
        candidate = _figures(replies[:width])
        stable = _figures(replies[width: 2 * width])
        return WindowFigures(candidate, stable, int(replies[-1] or 0))


def _figures(buckets: list[dict]) -> ArmFigures:
    requests = errors = 0
    latency: Counter[int] = Counter()
    ttft: Counter[int] = Counter()
    for bucket in buckets:
        for field, value in bucket.items():
            name, count = field.decode() if isinstance(field, bytes) else field, int(value)
            if name == "n":
                requests += count
            elif name == "err":
                errors += count
            elif name[0] == "l":
                latency[int(name[1:])] += count
            elif name[0] == "t":
                ttft[int(name[1:])] += count
    return ArmFigures(
        requests=requests, errors=errors, p50_latency_ms=bin_quantile(latency, 0.5),
        p99_latency_ms=bin_quantile(latency, 0.99), p99_ttft_ms=bin_quantile(ttft, 0.99),
    )
