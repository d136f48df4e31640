"""Queue limits and client disconnects, on a server with one batch slot."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.api.conftest import running_server

LONG = {"model": "tiny", "prompt": "Hello", "max_tokens": 900, "temperature": 0, "ignore_eos": True}


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory, tiny_model_dir):
    sections = {"runtime": {"max_batch_size": 1}, "queue": {"max_queued": 1, "retry_after_s": 2}}
    with running_server(tmp_path_factory.mktemp("one-slot"), tiny_model_dir, **sections) as s:
        yield s


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


async def test_full_queue_answers_503_with_retry_after(one_slot_server):
    base, server = one_slot_server
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        running = asyncio.create_task(http.post("/v1/completions", json=LONG))
        await asyncio.to_thread(wait_for, lambda: server.pipeline.in_flight == 1 and server.queue.depth() == 0)
        waiting = asyncio.create_task(http.post("/v1/completions", json=LONG | {"max_tokens": 5}))
        await asyncio.to_thread(wait_for, lambda: server.queue.depth() == 1)
        refused = await http.post("/v1/completions", json=LONG | {"max_tokens": 5})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "2"
        assert refused.json()["error"]["code"] == "queue_full"
        # Nothing already accepted is lost: both earlier requests complete.
        assert (await running).status_code == 200
        assert (await waiting).status_code == 200


async def test_disconnected_stream_frees_its_slot_for_the_next_request(one_slot_server):
    base, server = one_slot_server
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        async with http.stream("POST", "/v1/completions", json=LONG | {"stream": True}) as r:
            lines = r.aiter_lines()
            first = await anext(lines)
            request_id = first.split('"id":"')[1].split('"')[0]
        # The stream is closed after one chunk; the one slot must free up long before 900 tokens.
        after = await http.post("/v1/completions", json=LONG | {"max_tokens": 5})
        assert after.status_code == 200
    await server.request_log.flush()
    record = await server.request_log.get(request_id)
    assert record.status == "cancelled"
    assert 1 <= record.completion_tokens < LONG["max_tokens"]
