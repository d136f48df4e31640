"""Answers a non-streaming text request from cache when it may, else runs it and fills the cache.

The exact cache serves deterministic requests (temperature 0 or a seed) that are the same in
every output-changing detail; the semantic cache, when the caller opts in, serves requests whose
meaning is close enough (same tenant, model and parameters). A hit is not charged to the
caller's rate limits. `no_cache` (Cache-Control: no-cache) skips the lookups but still stores
the fresh answer, so the next caller gets it."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any

from genloom.gateway.cache import (
    CachedCompletion,
    ResponseCache,
    SemanticCache,
    cache_key,
    semantic_params_key,
    semantic_text,
)
from genloom.gateway.text_service import Completion, DisconnectProbe, TextRequest, TextService


log = logging.getLogger("genloom.cache")


class CacheOutcome(str, Enum):
    HIT = "hit"
    MISS = "miss"


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    cache: CacheOutcome
    headers: dict[str, str]


class CachedTextService:
    def __init__(
        self, *, text: TextService, exact: ResponseCache | None, semantic: SemanticCache | None, ttl_s: float
    ) -> None:
        self._text = text
        self._exact = exact
        self._semantic = semantic
        self._ttl_s = ttl_s

    async def answer(
        self, request: TextRequest, disconnected: DisconnectProbe, *, no_cache: bool = False, semantic: bool = False
    ) -> Answer:
        request = self._text.route(request)
        # Cheap checks only: a miss is fully validated by complete(), and a hit matches a request that was.
        self._text.check_model(request.model)
        key = cache_key(request) if self._exact is not None else None
        use_semantic = semantic and self._semantic is not None
        if not no_cache:
            hit = await self._lookup(request, key, use_semantic)
            if hit is not None:
                body = hit.body | {"id": request.id, "created": int(time.time())}
                return Answer(body, CacheOutcome.HIT, {"x-genloom-cache": CacheOutcome.HIT.value})
        completion = await self._text.complete(request, disconnected)
        body = completion.openai_body(request.endpoint)
        if _cacheable(completion, request):
            stored = CachedCompletion(body=body, created_at=time.time())
            if key is not None and self._exact is not None:
                await self._exact.put(key, stored, self._ttl_s)
            if use_semantic and self._semantic is not None:
                try:
                    await self._semantic.store(
                        request.tenant, request.model, semantic_params_key(request), semantic_text(request), stored,
                        self._ttl_s,
                    )
                except Exception:
                    log.warning("semantic cache store failed", exc_info=True)
        headers = completion.rate_limit_headers | {"x-genloom-cache": CacheOutcome.MISS.value}
        return Answer(body, CacheOutcome.MISS, headers)

    async def _lookup(self, request: TextRequest, key: str | None, use_semantic: bool) -> CachedCompletion | None:
        if key is not None and self._exact is not None:
            found = await self._exact.get(key)
            if found is not None:
                return found
        if use_semantic and self._semantic is not None:
            try:
                near = await self._semantic.lookup(
                    request.tenant, request.model, semantic_params_key(request), semantic_text(request)
                )
            except Exception:  # the embedding model is not serving: answer without the semantic cache
                log.warning("semantic cache lookup failed; answering without it", exc_info=True)
                return None
            if near is not None:
                return near.value
        return None


def _cacheable(completion: Completion, request: TextRequest) -> bool:
    # A fallback's answer is not stored under the model asked for: it would outlive the outage.
    return completion.model == request.model and all(c.finish_reason in ("stop", "length") for c in completion.choices)
