"""Exact and semantic response caching over real HTTP, seen through the x-genloom-cache header."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import running_server


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    # Built-in models on: the semantic cache embeds with the built-in all-minilm-l6-v2.
    with running_server(tmp_path_factory.mktemp("cache"), tiny_model_dir, builtin_models=True) as (url, _):
        yield url


def chat(base: str, content: str, headers: dict | None = None, **params) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 6} | params
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers or {}, timeout=30)


def test_a_repeated_deterministic_request_is_served_from_cache(base):
    first = chat(base, "cache me", temperature=0)
    second = chat(base, "cache me", temperature=0)
    assert first.headers["x-genloom-cache"] == "miss" and second.headers["x-genloom-cache"] == "hit"
    assert second.json()["choices"] == first.json()["choices"] and second.json()["id"] != first.json()["id"]
    assert chat(base, "cache me", temperature=0, seed=3).headers["x-genloom-cache"] == "miss"  # other parameters


def test_no_cache_bypasses_and_sampled_requests_are_never_cached(base):
    chat(base, "fresh please", temperature=0)
    assert chat(base, "fresh please", {"Cache-Control": "no-cache"}, temperature=0).headers["x-genloom-cache"] == "miss"
    chat(base, "random", temperature=1.0)
    assert chat(base, "random", temperature=1.0).headers["x-genloom-cache"] == "miss"


def test_tenants_never_share_cached_answers(base):
    chat(base, "mine", {"X-Genloom-Tenant": "alice"}, temperature=0)
    assert chat(base, "mine", {"X-Genloom-Tenant": "bob"}, temperature=0).headers["x-genloom-cache"] == "miss"
    assert chat(base, "mine", {"X-Genloom-Tenant": "alice"}, temperature=0).headers["x-genloom-cache"] == "hit"


def test_semantic_cache_serves_a_paraphrase_when_asked_to(base):
    opt_in = {"X-Genloom-Semantic-Cache": "true", "X-Genloom-Tenant": "sem"}
    first = chat(base, "What is a Python list?", opt_in, temperature=0.7)
    assert first.headers["x-genloom-cache"] == "miss"
    near = chat(base, "what's a python list", opt_in, temperature=0.7)
    assert near.headers["x-genloom-cache"] == "hit" and near.json()["choices"] == first.json()["choices"]
    assert chat(base, "How do I bake bread?", opt_in, temperature=0.7).headers["x-genloom-cache"] == "miss"
    without = chat(base, "what's a python list", {"X-Genloom-Tenant": "sem"}, temperature=0.7)
    assert without.headers["x-genloom-cache"] == "miss"  # the semantic cache is opt-in
