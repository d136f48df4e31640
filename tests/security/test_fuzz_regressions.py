"""One test for each 500 the schemathesis run (test_openapi_fuzz.py) found, each now a clear 400
in OpenAI's shape or a normal answer; the unit tests pin the fix where it lives."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest
import torch

from genloom.jobs import SamplingParams
from genloom.runtimes.sampling import sample_token, shape_logits, token_logprobs
from genloom.telemetry.logs import configure_logging
from tests.security.conftest import ADMIN_KEY, secured_server

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
HELLO = [{"role": "user", "content": "hello"}]
HUGE = 2830021049965963803572879616901120  # what the fuzzer sent: past SQLite's and PostgreSQL's integers


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    with secured_server(tmp_path_factory.mktemp("regressions"), tiny_model_dir) as (url, _):
        yield url


@pytest.mark.parametrize(
    ("method", "path", "body", "param"),
    [
        ("POST", "/v1/templates/t/render", {"version": HUGE}, "version"),
        ("GET", f"/v1/admin/templates/t/versions/{HUGE}", None, "path.version"),
        ("GET", f"/v1/admin/scenarios/s/versions/{HUGE}", None, "path.version"),
        ("POST", "/v1/admin/scenarios/s/activate", {"version": HUGE}, "version"),
        ("POST", "/v1/admin/scenarios", {"name": "s", "template": {"name": "t", "version": HUGE}}, "template.version"),
    ],
)
def test_a_version_number_too_large_for_the_database_is_a_400(base, method, path, body, param):
    answer = httpx.request(method, f"{base}{path}", json=body, headers=AUTH)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions", "/v1/responses"])
def test_a_top_p_or_temperature_that_rounds_to_zero_in_float32_still_answers(base, path):
    for field in ("top_p", "temperature"):
        body = {"model": "tiny", "max_tokens": 3, field: 5e-324}
        if path == "/v1/responses":
            body = {"model": "tiny", "input": "hello", "max_output_tokens": 3, field: 5e-324}
        elif path == "/v1/chat/completions":
            body["messages"] = HELLO
        else:
            body["prompt"] = "hello"
        answer = httpx.post(f"{base}{path}", json=body, headers=AUTH, timeout=60)
        assert answer.status_code == 200, (field, answer.text)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_tiny_repetition_penalty_with_logprobs_answers_finite_json(base, path):
    body = {"model": "tiny", "max_tokens": 3, "repetition_penalty": 5e-324}
    body |= {"messages": HELLO, "logprobs": True, "top_logprobs": 5} if path.endswith("chat/completions") else {
        "prompt": "hello", "logprobs": 5}
    answer = httpx.post(f"{base}{path}", json=body, headers=AUTH, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["logprobs"]


def test_sampling_with_a_top_p_that_rounds_to_zero_keeps_the_likeliest_token():
    logits = torch.randn(64, generator=torch.Generator().manual_seed(1))
    params = SamplingParams(max_tokens=1, top_p=5e-324)
    assert sample_token(logits, params, torch.Generator().manual_seed(0)) == int(logits.argmax())


def test_sampling_with_a_temperature_too_small_to_divide_by_is_its_limit_the_argmax():
    logits = torch.randn(64, generator=torch.Generator().manual_seed(2))
    for temperature in (5e-324, 1e-300, 1e-45):
        params = SamplingParams(max_tokens=1, temperature=temperature)
        assert sample_token(logits, params, torch.Generator().manual_seed(0)) == int(logits.argmax())


def test_a_tiny_repetition_penalty_leaves_finite_logits_and_logprobs():
    logits = torch.tensor([5.0, -1.0, 2.0, 0.5])
    params = SamplingParams(max_tokens=1, repetition_penalty=5e-324)
    shaped = shape_logits(logits, params, prompt_ids=[0, 1], output_ids=[], end_ids=set(), generated=0)
    assert torch.isfinite(shaped).all()
    chosen, top = token_logprobs(shaped, 0, 4)
    assert all(value == value and abs(value) != float("inf") for value in [chosen, *(lp for _, lp in top)])


def test_a_token_that_cannot_be_chosen_has_logprob_minus_9999_not_minus_infinity():
    logits = torch.tensor([1.0, float("-inf"), 0.0])
    chosen, top = token_logprobs(logits, 1, 3)
    assert chosen == -9999.0 and top[-1] == (1, -9999.0)


def test_debug_logging_leaves_out_the_database_driver_s_statements():
    """aiosqlite logs each statement with its parameters (an upstream key registered through the
    API among them) at DEBUG: found by tests/security/test_secrets_at_rest.py."""
    root, driver = logging.getLogger(), logging.getLogger("aiosqlite")
    saved = root.handlers[:], root.level, driver.level
    try:
        configure_logging(level="debug", json_lines=True)
        assert root.isEnabledFor(logging.DEBUG) and not driver.isEnabledFor(logging.DEBUG)
        assert driver.isEnabledFor(logging.INFO)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        driver.setLevel(saved[2])
