"""Traces across real processes, exported over OTLP/HTTP to a stub collector that decodes them
with the official protobuf messages: one streamed request is one trace, from the HTTP span
(its parent the client's `traceparent`) through the pipeline's stages to the queue wait and
the worker's generation, in the embedded mode and across an API replica and a worker process."""

from __future__ import annotations

import os
from contextlib import ExitStack

import openai
import yaml

from tests.e2e.test_faults import environment, write_config
from tests.e2e.test_scale_out import ADMIN_KEY, HELLO, admin_client, process, serving
from tests.services import REDIS
from tests.stub_collector import running_collector

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def tracing_env(endpoint: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
        "GENLOOM_LOGGING__FORMAT": "json",
    }


def stream_once(base: str) -> str:
    """One streamed chat with the client's traceparent; the trace id the answer names."""
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=HELLO, max_tokens=6, stream=True, extra_headers={"traceparent": TRACEPARENT},
    )
    chunks = list(raw.parse())
    assert chunks and chunks[-1].choices[0].finish_reason is not None
    return raw.headers["x-genloom-trace-id"]


def check_trace(collector, trace_id: str, *, api_service: str, worker_service: str) -> None:
    spans = collector.wait_for(trace_id, {
        "POST /v1/chat/completions", "chat tiny", "admit", "queue and generate", "queue wait tiny@v1", "text_completion tiny@v1",
    })
    by_name = {s.name: s for s in spans}
    http = by_name["POST /v1/chat/completions"]
    assert http.parent_span_id == CLIENT_SPAN, "the client's traceparent is not the parent"
    assert http.attributes["http.response.status_code"] == 200 and http.service == api_service
    chat = by_name["chat tiny"]
    assert chat.parent_span_id == http.span_id
    assert chat.attributes["gen_ai.request.model"] == "tiny" and chat.attributes["gen_ai.response.model"] == "tiny@v1"
    assert chat.attributes["gen_ai.usage.output_tokens"] >= 1 and chat.attributes["gen_ai.usage.input_tokens"] >= 1
    assert "gen_ai.input.messages" not in chat.attributes and "gen_ai.output.messages" not in chat.attributes  # no content by default
    for stage in ("admit", "queue and generate"):
        assert by_name[stage].parent_span_id == chat.span_id, stage
    # Stages with nothing to do here (no guards, the cache off) add no span.
    assert not {"guard input", "guard output", "cache lookup", "cache store"} & set(by_name)
    for worker_span in ("queue wait tiny@v1", "text_completion tiny@v1"):
        span = by_name[worker_span]
        assert span.parent_span_id == chat.span_id and span.service == worker_service, worker_span
    generation = by_name["text_completion tiny@v1"]
    assert generation.attributes["gen_ai.usage.output_tokens"] == chat.attributes["gen_ai.usage.output_tokens"]
    assert "first_token" in generation.events and generation.attributes["genloom.batch.size"] >= 1
    wait = by_name["queue wait tiny@v1"]
    assert wait.end_ns <= generation.start_ns + 1_000_000  # the wait ends where the generation starts (clock resolution)
    assert not any(s.error for s in spans)


def test_one_streamed_request_is_one_trace_in_the_embedded_mode(tmp_path, tiny_model_dir):
    config = {"builtin_models": False, "models": [{"name": "tiny", "path": str(tiny_model_dir)}], "cache": {"enabled": False}}
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    with running_collector() as collector:
        env = {"GENLOOM_DATA_DIR": str(tmp_path / "data"), "GENLOOM_ADMIN_KEY": ADMIN_KEY, **tracing_env(collector.endpoint)}
        with process(tmp_path, "serve", ["serve", "--config", str(tmp_path / "genloom.yaml")], env) as (base, _):
            trace_id = stream_once(base)
            assert trace_id == CLIENT_TRACE
            check_trace(collector, trace_id, api_service="genloom-all", worker_service="genloom-all")
            # An async job joins the trace of the request that submitted it.
            admin = admin_client(base)
            submitted = admin.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 4}})
            assert submitted.status_code == 202
            job_trace = submitted.headers["x-genloom-trace-id"]
            assert job_trace != CLIENT_TRACE  # no traceparent sent: a trace of its own
            spans = collector.wait_for(job_trace, {"POST /v1/jobs", "queue wait tiny@v1", "text_completion tiny@v1"})
            assert {s.parent_span_id for s in spans if s.name != "POST /v1/jobs"} == {
                next(s.span_id for s in spans if s.name == "POST /v1/jobs")
            }
        assert '"trace_id": "%s"' % CLIENT_TRACE in (tmp_path / "serve.log").read_text()  # the JSON logs name it


def test_one_streamed_request_is_one_trace_across_an_api_replica_and_a_worker(tmp_path, tiny_model_dir, postgres_url, redis_prefix):
    config = write_config(tmp_path, tiny_model_dir)
    with running_collector() as collector, ExitStack() as stack:
        env = environment(tmp_path, postgres_url, REDIS, redis_prefix) | tracing_env(collector.endpoint)
        common = ["--config", str(config)]
        stack.enter_context(process(tmp_path, "worker", ["worker", *common], env))
        api, _ = stack.enter_context(process(tmp_path, "api", ["serve", "--role", "api", *common], env, ready=serving))
        trace_id = stream_once(api)
        assert trace_id == CLIENT_TRACE
        check_trace(collector, trace_id, api_service="genloom-api", worker_service="genloom-worker")


def test_tracing_is_off_without_an_exporter_in_the_environment(tmp_path, tiny_model_dir, monkeypatch):
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        monkeypatch.delenv(name)
    config = {"builtin_models": False, "models": [{"name": "tiny", "path": str(tiny_model_dir)}]}
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    env = {"GENLOOM_DATA_DIR": str(tmp_path / "data"), "GENLOOM_ADMIN_KEY": ADMIN_KEY}
    with process(tmp_path, "serve", ["serve", "--config", str(tmp_path / "genloom.yaml")], env) as (base, _):
        answer = admin_client(base).post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 2},
                                         headers={"traceparent": TRACEPARENT})
        assert answer.status_code == 200 and "x-genloom-trace-id" not in answer.headers
