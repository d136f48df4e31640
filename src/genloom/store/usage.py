"""A small rolling time series of what the server did, kept in the store (no Prometheus needed):
per minute, model and tenant, the requests, errors, tokens and cache hits, histograms of latency
and time to first token, and the most work seen waiting in the model's queue.

Each process adds to its own figures in memory and writes the minutes that changed every few
seconds (the server's lifecycle calls `flush` and `prune`), one row per (minute, model, tenant, process), replaced whole, so processes never
contend for a row and a reader sums them. Percentiles come from the merged histograms (placed
linearly within the bucket a quantile falls in). Rows older than `keep_s` are dropped. Counted:
text requests through the gateway's pipeline (chat, completions, responses; cache hits too), not
async jobs, images or embeddings."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, and_, delete, insert, or_, select

from genloom.store.database import Database
from genloom.store.schema import UsageMinuteRow

_usage: Table = UsageMinuteRow.__table__  # type: ignore[assignment]
log = logging.getLogger(__name__)

# Upper bounds of the latency buckets in milliseconds; one more bucket holds everything above.
BUCKETS_MS = (5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000)
_CHUNK = 200  # rows a statement (SQLite's expression depth and PostgreSQL's bind parameters stay far off)


def _histogram() -> list[int]:
    return [0] * (len(BUCKETS_MS) + 1)


def _bucket(ms: float) -> int:
    for i, bound in enumerate(BUCKETS_MS):
        if ms <= bound:
            return i
    return len(BUCKETS_MS)


@dataclass
class Figures:
    """One (minute, model, tenant) of one process, or summed over several."""

    requests: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    latency: list[int] = field(default_factory=_histogram)
    ttft: list[int] = field(default_factory=_histogram)
    queue_depth: int = 0  # the most seen waiting (a model's row; tenant "")

    def add(self, other: Figures) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cache_hits += other.cache_hits
        self.latency = [a + b for a, b in zip(self.latency, other.latency)]
        self.ttft = [a + b for a, b in zip(self.ttft, other.ttft)]
        self.queue_depth = max(self.queue_depth, other.queue_depth)


def percentile(histogram: list[int], q: float) -> float | None:
    """The q-th percentile (0-100) of a histogram over BUCKETS_MS; None when it is empty."""
    total = sum(histogram)
    if not total:
        return None
    rank = q / 100 * total
    seen = 0
    for i, count in enumerate(histogram):
        if count and seen + count >= rank:
            low = BUCKETS_MS[i - 1] if i else 0.0
            high = BUCKETS_MS[i] if i < len(BUCKETS_MS) else BUCKETS_MS[-1] * 2
            return round(low + (high - low) * max(0.0, rank - seen) / count, 1)
        seen += count
    return float(BUCKETS_MS[-1] * 2)


Key = tuple[int, str, str]  # (minute, model, tenant)


class UsageSeries:
    def __init__(self, *, database: Database, source: str, keep_s: float = 2 * 86400,
                 clock=time.time) -> None:
        self._database = database
        self._source = source[:128]
        self._keep_s = keep_s
        self._clock = clock
        self._figures: dict[Key, Figures] = {}
        self._dirty: set[Key] = set()
        self._lock = asyncio.Lock()

    def _at(self, model: str, tenant: str, at: float | None) -> tuple[Key, Figures]:
        key = (int((self._clock() if at is None else at) // 60) * 60, model[:255], tenant[:128])
        self._dirty.add(key)
        return key, self._figures.setdefault(key, Figures())

    def request(self, *, model: str, tenant: str, ok: bool, latency_ms: float, ttft_ms: float | None = None,
                prompt_tokens: int | None = 0, completion_tokens: int | None = 0, cached: bool = False,
                at: float | None = None) -> None:
        """One request that ended (answered, failed or refused after it was admitted)."""
        _, figures = self._at(model, tenant, at)
        figures.requests += 1
        figures.errors += 0 if ok else 1
        figures.prompt_tokens += prompt_tokens or 0
        figures.completion_tokens += completion_tokens or 0
        figures.cache_hits += 1 if cached else 0
        figures.latency[_bucket(latency_ms)] += 1
        if ttft_ms is not None:
            figures.ttft[_bucket(ttft_ms)] += 1

    def queue_depth(self, *, model: str, depth: int, at: float | None = None) -> None:
        _, figures = self._at(model, "", at)
        figures.queue_depth = max(figures.queue_depth, depth)

    async def flush(self) -> None:
        """Write every minute that changed (whole rows: this process's figures so far), a few
        hundred rows a statement; what could not be written is written at the next flush."""
        async with self._lock:
            keys, self._dirty = sorted(self._dirty), set()
            if not keys:
                return
            rows = [self._row(key, self._figures[key]) for key in keys]  # copies: counting goes on meanwhile
            try:
                async with self._database.engine.begin() as conn:
                    for at in range(0, len(keys), _CHUNK):
                        chunk = keys[at:at + _CHUNK]
                        await conn.execute(delete(_usage).where(_usage.c.source == self._source, or_(*(
                            and_(_usage.c.minute == m, _usage.c.model == model, _usage.c.tenant == tenant)
                            for m, model, tenant in chunk))))
                        await conn.execute(insert(_usage), rows[at:at + _CHUNK])
            except BaseException:  # the store away, or cancelled at shutdown: nothing is lost
                self._dirty.update(keys)
                raise
            # Only the current minute still changes: older ones need not stay in memory once written.
            now_minute = int(self._clock() // 60) * 60
            for key in [k for k in self._figures if k[0] < now_minute - 60 and k not in self._dirty]:
                del self._figures[key]

    def _row(self, key: Key, f: Figures) -> dict[str, Any]:
        minute, model, tenant = key
        return {"minute": minute, "model": model, "tenant": tenant, "source": self._source, "requests": f.requests,
                "errors": f.errors, "prompt_tokens": f.prompt_tokens, "completion_tokens": f.completion_tokens,
                "cache_hits": f.cache_hits, "latency": list(f.latency), "ttft": list(f.ttft), "queue_depth": f.queue_depth}

    async def prune(self) -> int:
        async with self._database.engine.begin() as conn:
            result = await conn.execute(delete(_usage).where(_usage.c.minute < self._clock() - self._keep_s))
        return result.rowcount or 0

    async def query(self, *, window_s: int, step_s: int, model: str | None = None, tenant: str | None = None
                    ) -> dict[str, Any]:
        """Buckets of `step_s` over the last `window_s`, every process and (unless filtered)
        every model and tenant summed; the models and tenants seen in the window (whatever the
        filters). A tenant filter keeps that tenant's requests and the queues' depth."""
        try:
            await self.flush()
        except Exception as e:  # figures not yet written are left out; the chart still answers
            log.warning("usage series: could not write before reading (%s)", e)
        now = self._clock()
        start = int((now - window_s) // step_s) * step_s + step_s
        query = select(_usage).where(_usage.c.minute >= start)
        if model is not None:
            query = query.where(_usage.c.model == model)
        if tenant is not None:
            query = query.where(_usage.c.tenant.in_([tenant, ""]))
        seen = select(_usage.c.model, _usage.c.tenant).where(_usage.c.minute >= start).distinct()
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
            pairs = (await conn.execute(seen)).all()
        data = await asyncio.to_thread(_buckets, rows, start=start, now=now, step_s=step_s)
        models = sorted({m for m, _ in pairs})
        tenants = sorted({t for _, t in pairs if t})
        return {"object": "usage", "window_s": window_s, "step_s": step_s, "data": data, "models": models, "tenants": tenants}


def _buckets(rows: list[Any], *, start: int, now: float, step_s: int) -> list[dict[str, Any]]:
    """The rows summed into buckets of `step_s` from `start`, with percentiles (a thread's work)."""
    buckets: dict[int, Figures] = {t: Figures() for t in range(start, int(now) + 1, step_s)}
    for row in rows:
        at = (row["minute"] - start) // step_s * step_s + start
        if at in buckets:
            buckets[at].add(Figures(
                requests=row["requests"], errors=row["errors"], prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"], cache_hits=row["cache_hits"], latency=list(row["latency"]),
                ttft=list(row["ttft"]), queue_depth=row["queue_depth"]))
    return [{
        "start": t, "requests": f.requests, "errors": f.errors, "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens, "cache_hits": f.cache_hits, "queue_depth": f.queue_depth,
        "latency_ms": {f"p{q}": percentile(f.latency, q) for q in (50, 95, 99)},
        "ttft_ms": {f"p{q}": percentile(f.ttft, q) for q in (50, 95, 99)},
    } for t, f in sorted(buckets.items())]
