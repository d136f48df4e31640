"""OpenAI's request fields: those that change nothing here are accepted and named in
x-genloom-ignored; those that would change the answer and are not done yet are a clear 400
naming the field; a typo is still refused; an image part for a text-only model is a 400 that
names the model, not a schema error. /v1/models says what each model takes."""

from __future__ import annotations

import httpx
import pytest

HELLO = [{"role": "user", "content": "Hello"}]


def test_fields_that_change_nothing_are_accepted_and_named(client):
    raw = client.chat.completions.with_raw_response.create(
        model="tiny", messages=HELLO, max_tokens=2, service_tier="auto", prompt_cache_key="k1", safety_identifier="u-1",
        reasoning_effort="low", store=False, modalities=["text"],
    )
    ignored = {f.strip() for f in raw.headers["x-genloom-ignored"].split(",")}
    assert ignored == {"service_tier", "prompt_cache_key", "safety_identifier", "reasoning_effort", "store", "modalities"}
    assert raw.parse().choices[0].message.content is not None
    plain = client.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=2)
    assert "x-genloom-ignored" not in plain.headers
    streamed = client.chat.completions.with_raw_response.create(
        model="tiny", messages=HELLO, max_tokens=2, stream=True, service_tier="auto")
    assert streamed.headers["x-genloom-ignored"] == "service_tier"
    list(streamed.parse())


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"tool_choice": "auto"}, "tool_choice", "tools"),
    ({"response_format": {"type": "xml"}}, "response_format", "not one of"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
     "response_format", "cannot be enforced"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio", "audio"),
    ({"modalities": ["text", "audio"]}, "modalities.1", ""),
    ({"temprature": 0.5}, "temprature", ""),
])
def test_what_is_not_done_is_a_clear_400_naming_the_field(base_url, extra, param, words):
    answer = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "tiny", "messages": HELLO} | extra)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == param and words in error["message"]


def test_response_format_text_is_plain_text(client):
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, response_format={"type": "text"})
    assert answer.choices[0].finish_reason


def test_an_image_for_a_text_only_model_names_the_model(base_url):
    message = {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                          {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
    answer = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "tiny", "messages": [message]})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "messages.0.content.1" and "model tiny reads text only" in error["message"]
    assert "image_url" in error["message"]


def test_models_say_what_they_take(base_url):
    card = httpx.get(f"{base_url}/v1/models/tiny").json()
    caps = card["capabilities"]
    assert caps["chat"] and caps["completions"] and caps["logprobs"]
    assert caps["tools"] and caps["json_schema"]
    assert not caps["embeddings"] and not caps["images"] and not caps["vision"]
    assert caps["context"] == card["max_context"]
