"""The OpenAI-compatible text API through the official openai client, over real HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

HELLO = [{"role": "user", "content": "Hello there"}]


def test_models_lists_the_configured_model(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.models.retrieve("tiny").id == "tiny"


def test_chat_completion_returns_text_usage_and_a_request_id(client):
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=12, temperature=0)
    assert raw.headers["x-request-id"]
    reply = raw.parse()
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    choice = reply.choices[0]
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 0
    assert 0 < reply.usage.completion_tokens <= 12
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_streamed_chat_equals_the_non_streamed_one_and_ends_with_usage(client):
    whole = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=20, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=20, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_completions_plain_and_streaming(client):
    whole = client.completions.create(model="tiny", prompt="The for statement", max_tokens=15, temperature=0)
    assert whole.object == "text_completion"
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(
            model="tiny", prompt="The for statement", max_tokens=15, temperature=0, stream=True
        )
    )
    assert streamed == whole.choices[0].text


def test_n_choices_with_a_seed_are_reproducible(client):
    kwargs = dict(model="tiny", messages=HELLO, max_tokens=15, temperature=1.0, seed=11, n=3)
    first = client.chat.completions.create(**kwargs)
    second = client.chat.completions.create(**kwargs)
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in second.choices]
    assert len({c.message.content for c in first.choices}) > 1


def test_stop_sequence_is_honoured(client):
    free = client.completions.create(model="tiny", prompt="Hello", max_tokens=30, temperature=0, extra_body={"ignore_eos": True})
    text = free.choices[0].text
    stop = text[4:7]
    cut = client.completions.create(model="tiny", prompt="Hello", max_tokens=30, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_unknown_model_is_404_in_openai_shape(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert e.value.body["code"] == "model_not_found"
    assert "tiny" in e.value.body["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"n": 0}, "n"),
        ({"top_p": 1.5}, "top_p"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"presence_penalty": 2.5}, "presence_penalty"),
        ({"logit_bias": {"abc": 5}}, "logit_bias"),
        ({"logit_bias": {"5": 101}}, "logit_bias.5"),
        ({"logit_bias": {"99999999": 5}}, "logit_bias"),
        ({"stop_token_ids": [99999999]}, "stop_token_ids"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"min_tokens": 9, "max_tokens": 4}, "min_tokens"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"no_such_field": 1}, "no_such_field"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages.0.role"),
    ],
)
def test_bad_parameter_is_400_naming_it(base_url, body, param):
    payload = {"model": "tiny", "messages": HELLO} | body
    r = httpx.post(f"{base_url}/v1/chat/completions", json=payload)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]
    assert "Traceback" not in r.text


def test_bad_parameter_through_the_openai_client_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny", messages=HELLO, temperature=-1)


def test_malformed_json_is_400(base_url):
    r = httpx.post(f"{base_url}/v1/chat/completions", content=b'{"model": "tiny", "messages": [', headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "the request body is not valid JSON"
    assert r.headers["x-request-id"]


def test_body_over_the_limit_is_413(base_url):
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 2_000_000}]}
    r = httpx.post(f"{base_url}/v1/chat/completions", json=big)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_body_over_the_limit_without_content_length_is_413(base_url):
    def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = httpx.post(f"{base_url}/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_route_is_404_in_openai_shape(base_url):
    r = httpx.get(f"{base_url}/v1/nothing")
    assert r.status_code == 404
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_callers_request_id_is_echoed(base_url):
    r = httpx.get(f"{base_url}/healthz", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


def test_health_and_readiness(base_url):
    assert httpx.get(f"{base_url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base_url}/readyz")
    assert ready.status_code == 200
    assert ready.json()["models"] == ["tiny@v1"]


def test_sse_wire_format_matches_openai(base_url):
    payload = {"model": "tiny", "messages": HELLO, "max_tokens": 5, "stream": True, "temperature": 0}
    with httpx.stream("POST", f"{base_url}/v1/chat/completions", json=payload) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0][6:])
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}


async def test_every_request_and_its_outcome_is_recorded(server, client):
    _, genloom = server
    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=8, temperature=0, seed=5)
    await genloom.request_log.flush()
    record = await genloom.request_log.get(reply.id)
    assert record.status == "completed"
    assert record.endpoint == "/v1/chat/completions"
    assert record.model == "tiny@v1"  # the version that served it
    assert record.prompt == HELLO
    assert record.output == [reply.choices[0].message.content]
    assert (record.prompt_tokens, record.completion_tokens) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    assert record.params["max_tokens"] == 8 and record.params["temperature"] == 0 and record.params["seed"] == 5
    assert 0 < record.ttft_ms <= record.latency_ms
    assert record.created_at <= record.finished_at


def test_n_beyond_the_models_batch_and_out_of_range_seeds_are_400(client):
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, n=1000)
    assert too_many.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as seed:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, seed=2**64)
    assert seed.value.body["param"] == "seed"
