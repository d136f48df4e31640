"""Response caches for text generation: an exact cache and an opt-in semantic cache.

The exact cache answers a request with the stored response of an identical earlier request
(`cache_key`). It applies only to deterministic requests, temperature 0 or a fixed seed, since
replaying a sampled answer would change what a client asked for: fresh samples.

The semantic cache answers a request whose text means nearly the same as a stored one (cosine
similarity of embeddings at or above a threshold). It is opt-in per tenant because it may
answer a differently worded question; it compares only within one tenant, one model and one
`semantic_params_key` (everything but the embedded text must match exactly), never across.

Neither cache applies when the client sends `Cache-Control: no-cache`: the caller skips both.
Entries expire after a TTL and the least recently used go first when a cache is full. An
implementation over a shared store answers the same protocols and passes the same tests."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:  # only for annotations, so text_service can import this module in turn
    from genloom.gateway.text_service import TextRequest

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]
_KEY_VERSION = 2  # bump when the key's contents change, so old entries are never read as new ones


def _sampling(request: TextRequest) -> dict[str, Any]:
    """The parameters that change what a model writes, in a form JSON spells one way only."""
    p = request.params
    return {
        # Without max_tokens the server picks a default from the model and prompt, both in the key.
        "max_tokens": p.max_tokens if request.max_tokens_given else None,
        "temperature": float(p.temperature), "top_p": float(p.top_p), "top_k": int(p.top_k),
        "stop": list(p.stop),  # as sent, not sorted: another spelling costs a miss, never a wrong answer
        "seed": p.seed, "ignore_eos": bool(p.ignore_eos), "n": request.n,
        "presence_penalty": float(p.presence_penalty), "frequency_penalty": float(p.frequency_penalty),
        "logit_bias": [[i, float(b)] for i, b in p.logit_bias], "repetition_penalty": float(p.repetition_penalty),
        "min_tokens": int(p.min_tokens), "stop_token_ids": list(p.stop_token_ids),
        "logprobs": bool(p.logprobs), "top_logprobs": int(p.top_logprobs), "grammar": p.grammar,
    }


def _digest(payload: dict[str, Any]) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_deterministic(request: TextRequest) -> bool:
    return request.params.temperature == 0 or request.params.seed is not None


def cache_key(request: TextRequest) -> str | None:
    """The exact cache's key, or None for a sampled request (temperature > 0 and no seed).

    In the key: tenant, endpoint, model, the messages or prompt exactly as sent (whitespace and
    case included, since the model sees them), n and every sampling parameter in `_sampling`.
    Not in it: the request id, tier, API key and rate limits, which change who pays and when
    a request runs but not what the model writes. The model is the version that serves it
    (`name@vN`), so a new version never answers from an older one's entries."""
    if not is_deterministic(request):
        return None
    # The tenant leads the key, so a tenant's entries can be found and forgotten together.
    return request.tenant + "/" + _digest({
        "v": _KEY_VERSION, "tenant": request.tenant, "endpoint": request.endpoint, "model": request.model,
        "messages": request.messages, "prompt": request.prompt, "sampling": _sampling(request), "echo": request.echo,
        "tools": request.tools.to_record() if request.tools else None,
    })


def semantic_params_key(request: TextRequest) -> str:
    """What must match exactly for a semantic hit: endpoint, sampling parameters and the system
    messages (an instruction such as "answer in French" barely moves an embedding)."""
    system = [m for m in request.messages or [] if m.get("role") in ("system", "developer")]
    return _digest({"v": _KEY_VERSION, "endpoint": request.endpoint, "system": system, "sampling": _sampling(request),
                    "tools": request.tools.to_record() if request.tools else None})


def semantic_text(request: TextRequest) -> str:
    """The text the semantic cache embeds: the prompt, or the non-system turns as "role: content" lines."""
    if request.messages is None:
        return request.prompt or ""
    turns = [m for m in request.messages if m.get("role") not in ("system", "developer")]
    return "\n".join(f"{m.get('role', '')}: {m.get('content', '')}" for m in turns)


@dataclass(frozen=True)
class CachedCompletion:
    """A stored answer: the endpoint's JSON response body and when it was first made (Unix seconds)."""

    body: dict[str, Any]
    created_at: float


@dataclass(frozen=True)
class CacheStats:
    hits: int
    misses: int
    entries: int


class SemanticHit(NamedTuple):
    value: CachedCompletion
    similarity: float


class ResponseCache(Protocol):
    async def get(self, key: str) -> CachedCompletion | None: ...
    async def put(self, key: str, value: CachedCompletion, ttl_s: float) -> None: ...
    async def stats(self) -> CacheStats: ...
    async def forget_tenant(self, tenant: str) -> int: ...


class SemanticCache(Protocol):
    async def lookup(self, tenant: str, model: str, params_key: str, text: str) -> SemanticHit | None: ...
    async def store(
        self, tenant: str, model: str, params_key: str, text: str, value: CachedCompletion, ttl_s: float
    ) -> None: ...
    async def stats(self) -> CacheStats: ...
    async def forget_tenant(self, tenant: str) -> int: ...


def _encode(value: CachedCompletion) -> str:
    # Stored as JSON, as a shared store would: a caller's later edits to a body never reach the cache.
    return json.dumps({"body": value.body, "created_at": value.created_at}, allow_nan=False)


def _decode(data: str) -> CachedCompletion:
    raw = json.loads(data)
    return CachedCompletion(body=raw["body"], created_at=raw["created_at"])


def _check_ttl(ttl_s: float) -> None:
    if not (math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"ttl_s must be a finite number of seconds > 0, got {ttl_s}")


def _check_size(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


class InMemoryResponseCache:
    """One process's exact cache: entries expire after their TTL; the least recently used go first."""

    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        _check_size("max_entries", max_entries)
        self._max_entries, self._clock = max_entries, clock
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()  # key -> (expires at, JSON)
        self._hits = self._misses = 0

    async def get(self, key: str) -> CachedCompletion | None:
        entry = self._entries.get(key)
        if entry is None or entry[0] <= self._clock():
            self._entries.pop(key, None)
            self._misses += 1
            return None
        self._entries.move_to_end(key)
        self._hits += 1
        return _decode(entry[1])

    async def put(self, key: str, value: CachedCompletion, ttl_s: float) -> None:
        _check_ttl(ttl_s)
        self._entries[key] = (self._clock() + ttl_s, _encode(value))
        self._entries.move_to_end(key)
        if len(self._entries) > self._max_entries:
            self._drop_expired()
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def stats(self) -> CacheStats:
        self._drop_expired()
        return CacheStats(self._hits, self._misses, len(self._entries))

    async def forget_tenant(self, tenant: str) -> int:
        """Drop every entry of the tenant's; how many there were."""
        keys = [k for k in self._entries if k.startswith(tenant + "/")]
        for key in keys:
            del self._entries[key]
        return len(keys)

    def _drop_expired(self) -> None:
        now = self._clock()
        for key in [k for k, (expires, _) in self._entries.items() if expires <= now]:
            del self._entries[key]


_BucketKey = tuple[str, str, str]  # (tenant, model, params_key)


@dataclass
class _Bucket:
    """The entries of one bucket key: row i of `vectors` belongs to entry `ids[i]`."""

    ids: list[int]
    vectors: np.ndarray  # shape (len(ids), dimensions), unit rows


@dataclass(frozen=True)
class _Entry:
    bucket: _BucketKey
    text: str
    data: str
    expires_at: float


class InMemorySemanticCache:
    """One process's semantic cache: a matrix of unit vectors per bucket, searched by dot product.

    `embed` runs off the event loop (an embedding model is CPU or GPU work); at most
    `max_entries_per_tenant` entries per tenant, the least recently used dropped first."""

    def __init__(
        self, *, embed: Embed, threshold: float = 0.92, max_entries_per_tenant: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (math.isfinite(threshold) and -1 <= threshold <= 1):
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        _check_size("max_entries_per_tenant", max_entries_per_tenant)
        self._embed, self._threshold, self._clock = embed, threshold, clock
        self._max_per_tenant = max_entries_per_tenant
        self._buckets: dict[_BucketKey, _Bucket] = {}
        self._tenants: dict[str, OrderedDict[int, _Entry]] = {}  # least recently used first
        self._next_id = 0
        self._hits = self._misses = 0

    async def lookup(self, tenant: str, model: str, params_key: str, text: str) -> SemanticHit | None:
        vector = await self._vector(text)
        self._drop_expired(tenant)
        bucket = self._buckets.get((tenant, model, params_key))
        if bucket is not None:
            similarities = bucket.vectors @ vector
            best = int(np.argmax(similarities))
            if similarities[best] >= self._threshold:
                entry_id = bucket.ids[best]
                self._tenants[tenant].move_to_end(entry_id)
                self._hits += 1
                return SemanticHit(_decode(self._tenants[tenant][entry_id].data), float(similarities[best]))
        self._misses += 1
        return None

    async def store(
        self, tenant: str, model: str, params_key: str, text: str, value: CachedCompletion, ttl_s: float
    ) -> None:
        _check_ttl(ttl_s)
        data = _encode(value)
        vector = await self._vector(text)
        key: _BucketKey = (tenant, model, params_key)
        for entry_id in [i for i, e in self._tenants.get(tenant, {}).items() if e.bucket == key and e.text == text]:
            self._remove(tenant, entry_id)  # the same text again replaces, so one text is one row
        entries = self._tenants.setdefault(tenant, OrderedDict())
        entry_id, self._next_id = self._next_id, self._next_id + 1
        entries[entry_id] = _Entry(key, text, data, self._clock() + ttl_s)
        bucket = self._buckets.get(key)
        if bucket is None:
            self._buckets[key] = _Bucket([entry_id], vector[None, :])
        else:
            bucket.ids.append(entry_id)
            bucket.vectors = np.vstack([bucket.vectors, vector])
        if len(entries) > self._max_per_tenant:
            self._drop_expired(tenant)
        while len(entries) > self._max_per_tenant:
            self._remove(tenant, next(iter(entries)))

    async def stats(self) -> CacheStats:
        for tenant in list(self._tenants):
            self._drop_expired(tenant)
        return CacheStats(self._hits, self._misses, sum(len(e) for e in self._tenants.values()))

    async def forget_tenant(self, tenant: str) -> int:
        ids = list(self._tenants.get(tenant, {}))
        for entry_id in ids:
            self._remove(tenant, entry_id)
        return len(ids)

    async def _vector(self, text: str) -> np.ndarray:
        vector = np.asarray((await self._embed([text]))[0], dtype=np.float32)
        norm = float(np.linalg.norm(vector))
        if not norm > 0:
            raise ValueError("the embedding model returned a zero vector; cannot compare it")
        return vector / norm  # unit length, so a dot product is the cosine similarity

    def _drop_expired(self, tenant: str) -> None:
        now = self._clock()
        entries = self._tenants.get(tenant, {})
        for entry_id in [i for i, e in entries.items() if e.expires_at <= now]:
            self._remove(tenant, entry_id)

    def _remove(self, tenant: str, entry_id: int) -> None:
        entry = self._tenants[tenant].pop(entry_id)
        bucket = self._buckets[entry.bucket]
        row = bucket.ids.index(entry_id)
        del bucket.ids[row]
        bucket.vectors = np.delete(bucket.vectors, row, axis=0)
        if not bucket.ids:
            del self._buckets[entry.bucket]
        if not self._tenants[tenant]:
            del self._tenants[tenant]
