"""A realtime request never hangs: one that hears nothing from its job for its tier's
`timeout_s` ends with 504 `worker_timeout` (its worker went silent after starting) or 503
`queue_timeout` (it never got a place), over HTTP with the official client, for plain answers
and streams alike. And every error reads the same in a plain answer and in a stream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from tests.api.conftest import running_server
from tests.stub_upstream import Behaviour, StubMode, running_stub

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def stub():
    with running_stub(Behaviour(mode=StubMode.SLOW, delay_s=4)) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def silent(tmp_path_factory, tiny_model_dir, stub) -> Iterator[openai.OpenAI]:
    tiers = {name: {"weight": w, "max_wait_s": 1, "timeout_s": 1} for name, w in (("premium", 6), ("standard", 3), ("free", 1))}
    models = [{"name": "tiny", "path": str(tiny_model_dir)},
              {"name": "slow", "kind": "remote", "base_url": stub.base_url, "max_concurrency": 1, "read_timeout_s": 30}]
    with running_server(tmp_path_factory.mktemp("bounds"), tiny_model_dir, models=models, queue={"tiers": tiers},
                        cache={"enabled": False}) as (url, _):
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


def wait_for(condition, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_worker_gone_silent_after_starting_ends_with_504_in_the_tiers_time(silent):
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as cut:
        silent.chat.completions.create(model="slow", messages=HELLO, max_tokens=4)
    waited = time.monotonic() - started
    assert cut.value.status_code == 504 and cut.value.body["code"] == "worker_timeout"
    assert "went silent for 1 s" in cut.value.body["message"]
    assert 0.9 < waited < 6, waited  # the bound is 1 s; the rest is a loaded machine's slack


def test_a_request_that_never_gets_a_place_ends_with_503_queue_timeout(silent, stub):
    time.sleep(4.5)  # the previous test's call leaves the upstream's one slot
    with ThreadPoolExecutor(2) as pool:
        seen = len(stub.requests)
        first = pool.submit(silent.chat.completions.create, model="slow", messages=HELLO, max_tokens=4)
        wait_for(lambda: len(stub.requests) > seen)  # the first holds the model's only slot now
        second = pool.submit(silent.chat.completions.create, model="slow", messages=HELLO, max_tokens=4)
        errors = []
        for future in (first, second):
            with pytest.raises(openai.APIStatusError) as e:
                future.result()
            errors.append((e.value.status_code, e.value.body["code"], e.value.response.headers.get("retry-after")))
    assert errors[0][:2] == (504, "worker_timeout")
    assert errors[1] == (503, "queue_timeout", "1")


def test_a_stream_that_goes_silent_ends_with_an_error_event_not_a_hang(silent):
    time.sleep(4.5)
    started = time.monotonic()
    stream = silent.chat.completions.create(model="slow", messages=HELLO, max_tokens=4, stream=True)
    with pytest.raises(openai.APIError) as cut:
        list(stream)
    assert "went silent" in str(cut.value) and time.monotonic() - started < 6


def test_errors_read_the_same_in_a_plain_answer_and_a_stream():
    from genloom.api.errors import api_error
    from genloom.gateway.errors import NoWorker, NotReady, TimedOut
    from genloom.queue import QueueFull, TenantQueueFull
    from genloom.jobs import RequestClass

    for exc in (NotReady("draining"), NoWorker("m@v1"), TimedOut("slow", started=True),
                QueueFull(RequestClass.REALTIME, 4, 1), TenantQueueFull("t", RequestClass.REALTIME, 2, 1)):
        error = api_error(exc)
        assert error is not None
        assert f'"code": "{error.code}"' in error.sse() and f'"type": "{error.type}"' in error.sse()
    assert api_error(NotReady("draining")).code == "not_ready"
    assert api_error(TenantQueueFull("t", RequestClass.REALTIME, 2, 1)).status == 429
    assert api_error(KeyError("a bug")) is None
