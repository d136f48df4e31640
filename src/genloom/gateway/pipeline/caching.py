"""Stage 3, cache: a non-streaming request may be answered from the exact cache (deterministic
requests identical in every output-changing detail, per tenant and version) or, when the caller
opts in, the semantic cache (close enough in meaning). A hit skips admission: it costs no
capacity, so it is not charged to the caller's limits. A fresh answer is stored after the
output guard passed it; a fallback's answer is not (it would outlive the outage)."""

from __future__ import annotations

import logging
import time
from typing import Any

from genloom.gateway.cache import (
    CachedCompletion,
    ResponseCache,
    SemanticCache,
    cache_key,
    semantic_params_key,
    semantic_text,
)
from genloom.gateway.pipeline.call import TextCall
from genloom.telemetry import Observer

log = logging.getLogger("genloom.cache")


class Cache:
    name = "cache"

    def __init__(
        self, *, exact: ResponseCache | None, semantic: SemanticCache | None, ttl_s: float, observer: Observer
    ) -> None:
        self._exact = exact
        self._semantic = semantic
        self._ttl_s = ttl_s
        self._observer = observer

    async def forget_tenant(self, tenant: str) -> int:
        """Drop the tenant's cached answers, exact and semantic; how many there were."""
        dropped = 0
        for cache in (self._exact, self._semantic):
            if cache is not None:
                dropped += await cache.forget_tenant(tenant)
        return dropped

    @property
    def active(self) -> bool:
        """Whether a cache is configured (a trace shows the stage only then)."""
        return self._exact is not None or self._semantic is not None

    async def lookup(self, call: TextCall, *, semantic: bool) -> dict[str, Any] | None:
        """A stored answer body, or None."""
        request = call.request
        key = call.cache_key = cache_key(request) if self._exact is not None else None
        if key is not None and self._exact is not None:
            found = await self._exact.get(key)
            self._observer.cache_lookup(kind="exact", hit=found is not None)
            if found is not None:
                return found.body
        if semantic and self._semantic is not None:
            try:
                near = await self._semantic.lookup(request.tenant, request.model, semantic_params_key(request), semantic_text(request))
            except Exception:  # the embedding model is not serving: answer without the semantic cache
                log.warning("semantic cache lookup failed; answering without it", exc_info=True)
                return None
            self._observer.cache_lookup(kind="semantic", hit=near is not None)
            if near is not None:
                return near.value.body
        return None

    async def store(self, call: TextCall, body: dict[str, Any], *, semantic: bool) -> None:
        completion, request = call.completion, call.request
        assert completion is not None
        if completion.model != request.model or any(c.finish_reason not in ("stop", "length") for c in completion.choices):
            return
        stored = CachedCompletion(body=body, created_at=time.time())
        key = call.cache_key or (cache_key(request) if self._exact is not None else None)  # computed by lookup, unless skipped
        if key is not None and self._exact is not None:
            await self._exact.put(key, stored, self._ttl_s)
        if semantic and self._semantic is not None:
            try:
                await self._semantic.store(
                    request.tenant, request.model, semantic_params_key(request), semantic_text(request), stored, self._ttl_s,
                )
            except Exception:
                log.warning("semantic cache store failed", exc_info=True)
