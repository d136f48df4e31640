"""OpenAI's Batch API through the official client: lines become jobs, malformed lines go to the
error file and not the batch, the output and error files keep every custom_id, cancel ends it."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest


def line(custom_id: str, **body) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                       "body": {"model": "tiny", "messages": [{"role": "user", "content": custom_id}], "max_tokens": 3} | body})


def wait_done(client, batch_id: str, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "cancelled", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)
    return batch


def read_jsonl(client, file_id: str | None) -> list[dict]:
    return [] if file_id is None else [json.loads(x) for x in client.files.content(file_id).read().decode().splitlines()]


def test_a_batch_with_malformed_lines_finishes_with_every_line_accounted_for(client):
    good = [line(f"ok-{i}") for i in range(12)]
    bad = ["{not json", json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
           line("wrong-url").replace("/v1/chat/completions", "/v1/embeddings"), line("bad-field", temprature=1),
           line("ok-0")]  # a custom_id used twice
    upload = client.files.create(file=("in.jsonl", "\n".join(good + bad).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"run": "1"})
    assert batch.status in ("in_progress", "completed") and batch.request_counts.total == 17
    done = wait_done(client, batch.id)
    assert done.status == "completed" and done.metadata == {"run": "1"}
    assert (done.request_counts.completed, done.request_counts.failed) == (12, 5)
    outputs, errors = read_jsonl(client, done.output_file_id), read_jsonl(client, done.error_file_id)
    assert sorted(o["custom_id"] for o in outputs) == sorted(f"ok-{i}" for i in range(12))
    assert all(o["response"]["status_code"] == 200 and o["response"]["body"]["object"] == "chat.completion" for o in outputs)
    assert [e["error"]["line"] for e in errors] == [13, 14, 15, 16, 17]
    assert errors[3]["custom_id"] == "bad-field" and "temprature" in errors[3]["error"]["message"]
    assert "used twice" in errors[4]["error"]["message"]
    assert done.id in [b.id for b in client.batches.list()]


def test_cancel_ends_a_batch_as_cancelled(client):
    lines = [line(f"long-{i}", max_tokens=200, ignore_eos=True) for i in range(30)]
    upload = client.files.create(file=("long.jsonl", "\n".join(lines).encode()), purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait_done(client, batch.id)
    assert done.status == "cancelled" and done.request_counts.total == 30
    assert done.request_counts.failed > 0 and done.request_counts.completed + done.request_counts.failed == 30


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"input_file_id": "file-nope", "endpoint": "/v1/chat/completions", "completion_window": "24h"}, 404, "file_id"),
    ({"input_file_id": "x", "endpoint": "/v1/images/generations", "completion_window": "24h"}, 400, "endpoint"),
    ({"input_file_id": "x", "endpoint": "/v1/chat/completions", "completion_window": "1h"}, 400, "completion_window"),
])
def test_bad_batches_are_refused_clearly(base_url, body, status, param):
    answer = httpx.post(f"{base_url}/v1/batches", json=body)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["param"] == param


def test_a_file_uploaded_for_another_purpose_is_no_batch(client, base_url):
    upload = client.files.create(file=("x.jsonl", line("a").encode()), purpose="user_data")
    with pytest.raises(openai.BadRequestError) as refused:
        client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert refused.value.body["param"] == "input_file_id"
    assert httpx.get(f"{base_url}/v1/batches/batch_nope").status_code == 404
