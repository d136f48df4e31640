"""GET /metrics after mixed traffic over HTTP (plain and streamed chat, a cache hit, an async
job, a picture, an embedding, a 429): it parses with Prometheus' own parser, and every family
holds counts equal to what was sent."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genloom.runtimes.embeddings import builtin_embedding_model_path
from tests.api.conftest import running_server

ADMIN_KEY = "gl-metrics-test-admin-key-0123456789"
METRICS_TOKEN = "metrics-token-0123456789"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, tiny_image_model_dir) -> Iterator[str]:
    models = [
        {"name": "tiny", "path": str(tiny_model_dir)},
        {"name": "tiny-sd", "path": str(tiny_image_model_dir), "kind": "image", "default_steps": 2},
        {"name": "minilm", "path": str(builtin_embedding_model_path()), "kind": "embedding"},
    ]
    with running_server(tmp_path_factory.mktemp("metrics"), tiny_model_dir, models=models, auth="enabled",
                        admin_key=ADMIN_KEY, metrics={"token": METRICS_TOKEN, "jobs_refresh_s": 0.2}) as (url, _):
        yield url


def scrape(base: str) -> dict[str, list]:
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def value(families: dict[str, list], sample_name: str, **labels: str) -> float:
    """The sum of the samples of that name whose labels include `labels`."""
    family = sample_name.removesuffix("_total").removesuffix("_count").removesuffix("_sum").removesuffix("_bucket")
    return sum(s.value for s in families.get(family, []) if s.name == sample_name
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_need_the_token(server):
    assert httpx.get(f"{server}/metrics").status_code == 401
    assert httpx.get(f"{server}/metrics", headers={"Authorization": "Bearer wrong"}).json()["error"]["code"] == "invalid_api_key"


def test_after_mixed_traffic_every_family_counts_what_was_sent(server):
    admin = openai.OpenAI(base_url=f"{server}/v1", api_key=ADMIN_KEY, max_retries=0)
    http = httpx.Client(base_url=server, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
    before = scrape(server)

    plain = [admin.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5, temperature=0, extra_body={"ignore_eos": True})
             for _ in range(3)]  # the 2nd and 3rd are cache hits of the 1st
    stream = list(admin.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, stream=True,
                                                extra_body={"ignore_eos": True}))
    job = http.post("/v1/jobs", json={"url": "/v1/chat/completions",
                                      "body": {"model": "tiny", "messages": HELLO, "max_tokens": 4, "ignore_eos": True}})
    assert job.status_code == 202
    picture = admin.images.generate(model="tiny-sd", prompt="a red circle", size="32x32", n=2, response_format="b64_json")
    vectors = admin.embeddings.create(model="minilm", input=["one", "two"])
    tenant = http.post("/v1/admin/tenants", json={"name": "metered", "limits": {"requests_per_minute": 1}}).json()
    key = http.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "k"}).json()["key"]
    metered = openai.OpenAI(base_url=f"{server}/v1", api_key=key, max_retries=0)
    metered.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError):
        metered.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    deadline = time.monotonic() + 30
    while http.get(f"/v1/jobs/{job.json()['id']}").json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the jobs gauge is counted every 0.2 s

    after = scrape(server)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    chat = "/v1/chat/completions"
    assert delta("genloom_requests_total", route=chat, model="tiny", version="tiny@v1", status="completed") == 5
    assert delta("genloom_requests_total", route="/v1/images/generations", model="tiny-sd", status="completed") == 1
    assert delta("genloom_requests_total", route="/v1/embeddings", model="minilm", version="minilm@v1", status="completed") == 1
    assert delta("genloom_request_duration_seconds_count", route=chat, model="tiny") >= 5
    assert delta("genloom_cache_lookups_total", kind="exact", result="hit") == 2
    assert delta("genloom_cache_lookups_total", kind="exact", result="miss") == 1  # sampled requests are not cached
    assert delta("genloom_rate_limited_total", limit="requests_per_minute") == 1
    # Generated tokens: 5 (plain, once: the hits generate nothing) + 6 (stream) + 4 (job) + 2 (metered).
    assert delta("genloom_tokens_total", model="tiny@v1", kind="completion") == 5 + 6 + 4 + 2
    assert delta("genloom_tokens_total", model="tiny@v1", kind="prompt") > 0
    assert delta("genloom_images_total", model="tiny-sd@v1") == 2 == len(picture.data)
    assert delta("genloom_time_to_first_token_seconds_count", model="tiny@v1") == 3  # plain miss, stream, metered
    assert delta("genloom_time_per_output_token_seconds_count", model="tiny@v1") == 3
    assert delta("genloom_queue_wait_seconds_count", model="tiny@v1", **{"class": "realtime"}) == 3
    assert delta("genloom_batch_size_count", model="tiny@v1") >= 4
    assert value(after, "genloom_jobs", state="completed") == 1
    assert value(after, "genloom_workers", model="tiny@v1") == 1 and value(after, "genloom_workers", model="minilm@v1") == 1
    assert value(after, "genloom_queue_depth", model="tiny@v1", **{"class": "realtime"}) == 0
    assert value(after, "genloom_running", model="tiny@v1") == 0
    assert value(after, "process_resident_memory_bytes") > 10e6 and value(after, "process_open_fds") > 0
    assert len(vectors.data) == 2 and len(stream) > 1 and plain[0].choices[0].message.content == plain[2].choices[0].message.content


def test_metrics_are_off_when_disabled(tmp_path, tiny_model_dir):
    with running_server(tmp_path, tiny_model_dir, metrics={"enabled": False}) as (url, _):
        assert httpx.get(f"{url}/metrics").status_code == 404
