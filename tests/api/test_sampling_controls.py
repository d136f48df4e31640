"""Logprobs and the logit controls through the official client, on a real server with a tiny
random model (greedy decoding, so each outcome is exact): logprobs and top_logprobs in OpenAI's
shapes (chat, streamed chat, completions), logit_bias, min_tokens, stop_token_ids, and the
penalties that make a favoured token give way."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

HELLO = [{"role": "user", "content": "Hello"}]
FAVOURED = 100  # a token id of the tiny model's vocabulary that is no end token


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def greedy(client, **extra):
    return client.chat.completions.create(model="tiny", messages=HELLO, temperature=0, **extra)


def test_chat_logprobs_give_each_token_and_its_likeliest_alternatives(client):
    answer = greedy(client, max_tokens=6, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True})
    content = answer.choices[0].logprobs.content
    assert len(content) == answer.usage.completion_tokens == 6
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.bytes == list(entry.token.encode())
        # Greedy: the chosen token is the likeliest one.
        assert entry.top_logprobs[0].token == entry.token and entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob >= entry.top_logprobs[2].logprob
    assert greedy(client, max_tokens=3).choices[0].logprobs is None  # not asked: none


def test_streamed_logprobs_equal_the_plain_ones(client):
    plain = greedy(client, max_tokens=5, logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    streamed = []
    for chunk in greedy(client, max_tokens=5, logprobs=True, top_logprobs=2, stream=True, extra_body={"ignore_eos": True}):
        if chunk.choices and chunk.choices[0].logprobs is not None:
            streamed += chunk.choices[0].logprobs.content
    assert [(e.token, round(e.logprob, 5)) for e in streamed] == [(e.token, round(e.logprob, 5)) for e in plain.choices[0].logprobs.content]


def test_completions_logprobs_in_the_legacy_shape(client):
    answer = client.completions.create(model="tiny", prompt="Once upon", max_tokens=4, temperature=0, logprobs=2,
                                       extra_body={"ignore_eos": True})
    lp = answer.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 4
    assert all(len(top) <= 2 and tok in top for tok, top in zip(lp.tokens, lp.top_logprobs))
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_logit_bias_forces_a_token_and_stop_token_ids_end_on_it(client, tokenizer):
    forced = greedy(client, max_tokens=5, logit_bias={str(FAVOURED): 100}, logprobs=True)
    word = tokenizer.decode([FAVOURED])
    assert [e.token for e in forced.choices[0].logprobs.content] == [word] * 5
    stopped = greedy(client, max_tokens=5, logit_bias={str(FAVOURED): 100}, extra_body={"stop_token_ids": [FAVOURED]})
    assert stopped.choices[0].finish_reason == "stop" and stopped.choices[0].message.content == ""


def test_min_tokens_holds_off_the_end(client, tokenizer):
    end = tokenizer.eos_token_id
    at_once = greedy(client, max_tokens=8, logit_bias={str(end): 100})
    assert at_once.choices[0].finish_reason == "stop" and at_once.choices[0].message.content == ""
    held = greedy(client, max_tokens=8, logit_bias={str(end): 100}, logprobs=True, extra_body={"min_tokens": 3})
    assert held.choices[0].finish_reason == "stop" and len(held.choices[0].logprobs.content) == 3


def favoured_count(client, word: str, bias: float, **controls) -> int:
    answer = greedy(client, max_tokens=12, logit_bias={str(FAVOURED): bias}, logprobs=True,
                    extra_body={"ignore_eos": True, **controls})
    return sum(e.token == word for e in answer.choices[0].logprobs.content)


@pytest.fixture()
def just_enough_bias(client, tokenizer) -> float:
    """The smallest whole bias that makes the favoured token win at least 10 of 12 steps."""
    word = tokenizer.decode([FAVOURED])
    for bias in range(1, 30):
        if favoured_count(client, word, bias) >= 10:
            return float(bias)
    raise AssertionError("no bias under 30 makes the token win")


@pytest.mark.parametrize("penalty", [{"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 3.0}],
                         ids=["frequency", "presence", "repetition"])
def test_penalties_make_a_favoured_token_give_way(client, tokenizer, just_enough_bias, penalty):
    word = tokenizer.decode([FAVOURED])
    without = favoured_count(client, word, just_enough_bias)
    with_penalty = favoured_count(client, word, just_enough_bias, **penalty)
    assert without >= 10 and with_penalty < without, (without, with_penalty)


def test_completions_echo_starts_every_choice_with_the_prompt(client):
    plain = client.completions.create(model="tiny", prompt="Once upon", max_tokens=4, temperature=0)
    echoed = client.completions.create(model="tiny", prompt="Once upon", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == "Once upon" + plain.choices[0].text  # and the cache kept them apart
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny", prompt="Once upon", max_tokens=4, temperature=0, echo=True, stream=True) if c.choices)
    assert streamed == echoed.choices[0].text


def test_a_job_answers_with_logprobs_under_its_logit_controls(base_url, tokenizer):
    import time

    import httpx

    body = {"model": "tiny", "messages": HELLO, "max_tokens": 3, "temperature": 0, "logprobs": True, "top_logprobs": 2,
            "logit_bias": {str(FAVOURED): 100}}
    created = httpx.post(f"{base_url}/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
    assert created.status_code == 202, created.text
    deadline = time.monotonic() + 30
    while (job := httpx.get(f"{base_url}/v1/jobs/{created.json()['id']}").json())["status"] != "completed":
        assert time.monotonic() < deadline and job["status"] not in ("failed", "cancelled"), job
        time.sleep(0.05)
    content = job["result"]["choices"][0]["logprobs"]["content"]
    assert [e["token"] for e in content] == [tokenizer.decode([FAVOURED])] * 3
    assert all(len(e["top_logprobs"]) == 2 for e in content)


def test_a_stored_job_request_comes_back_with_every_control():
    """What a recovered job runs with (its record is JSON in the store) is what was asked."""
    import json

    from genloom.gateway.text_service import TextRequest
    from genloom.jobs import SamplingParams, Tier

    params = SamplingParams(max_tokens=5, stop=("x",), presence_penalty=0.5, frequency_penalty=0.25,
                            logit_bias=((3, 1.5), (7, -2.0)), repetition_penalty=1.2, min_tokens=2, stop_token_ids=(9,),
                            logprobs=True, top_logprobs=3)
    request = TextRequest(endpoint="/v1/completions", model="tiny", params=params, prompt="hi", echo=True)
    back = TextRequest.from_record(json.loads(json.dumps(request.to_record())), id=request.id, tier=Tier.FREE, tenant="default")
    assert back.params == params and back.echo
