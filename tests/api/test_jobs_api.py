"""The jobs API over real HTTP against a real server with a tiny model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import running_server

HELLO = [{"role": "user", "content": "hello"}]


def chat_job(max_tokens: int = 6, **body) -> dict:
    return {"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": max_tokens, **body}}


def long_job(max_tokens: int = 400) -> dict:
    return chat_job(max_tokens, ignore_eos=True)


def wait_for(http: httpx.Client, job_id: str, states: set[str], timeout_s: float = 30, **kw) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(f"/v1/jobs/{job_id}", **kw).json()
        if job["status"] in states:
            return job
        assert time.monotonic() < deadline, f"job stayed {job['status']}"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def jobs_server(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    # One batch row and no reserved rows: a long job holds the model, so others stay queued.
    runtime = {"max_batch_size": 1, "realtime_reserved_rows": 0}
    queue = {"max_queued_async": 6, "tenant_max_share": 0.5}
    with running_server(tmp_path_factory.mktemp("jobs"), tiny_model_dir, runtime=runtime, queue=queue) as (base, _):
        yield base


@pytest.fixture()
def http(jobs_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=jobs_server, timeout=30) as client:
        yield client


def test_submitted_job_answers_202_then_completes_with_the_chat_result(http):
    created = http.post("/v1/jobs", json=chat_job() | {"metadata": {"batch": "1"}})
    assert created.status_code == 202 and created.headers["x-request-id"]
    job = created.json()
    assert job["object"] == "job" and job["status"] in {"queued", "processing", "completed"}
    done = wait_for(http, job["id"], {"completed"})
    result = done["result"]
    assert result["object"] == "chat.completion" and result["choices"][0]["message"]["role"] == "assistant"
    assert result["usage"]["completion_tokens"] == 6 or result["choices"][0]["finish_reason"] == "stop"
    assert done["metadata"] == {"batch": "1"} and done["attempts"] == 1
    states = [t["status"] for t in done["transitions"]]
    assert states == ["queued", "processing", "completed"]
    times = [t["at"] for t in done["transitions"]]
    assert times == sorted(times) and done["created_at"] <= done["started_at"] <= done["finished_at"]


def test_same_idempotency_key_returns_the_same_job(http):
    key = {"Idempotency-Key": f"key-{time.monotonic_ns()}"}
    first = http.post("/v1/jobs", json=chat_job(), headers=key)
    again = http.post("/v1/jobs", json=chat_job(), headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["idempotent-replayed"] == "true"
    other = http.post("/v1/jobs", json=chat_job(max_tokens=3), headers=key)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_cancel_a_running_and_a_queued_job_frees_the_model(http):
    running = http.post("/v1/jobs", json=long_job(1000)).json()
    wait_for(http, running["id"], {"processing"})
    queued = http.post("/v1/jobs", json=long_job()).json()
    waiting = http.get(f"/v1/jobs/{queued['id']}").json()
    assert waiting["status"] == "queued" and waiting["position"] == 1
    status = http.get("/v1/admin/queue").json()
    assert status["backend"] == "memory" and status["models"]["tiny@v1"] == {"realtime": 0, "async": 1}
    assert status["dead_letters"] == []
    assert http.delete(f"/v1/jobs/{queued['id']}").json()["status"] == "cancelled"
    cancelled = http.delete(f"/v1/jobs/{running['id']}").json()
    assert cancelled["status"] == "cancelled" and cancelled["transitions"][-1]["status"] == "cancelled"
    # The running job's row is freed: a new job starts and completes instead of waiting 1000 tokens.
    after = http.post("/v1/jobs", json=chat_job()).json()
    assert wait_for(http, after["id"], {"completed"}, timeout_s=10)["status"] == "completed"
    stopped = http.get(f"/v1/jobs/{running['id']}").json()
    assert stopped["status"] == "cancelled" and stopped["result"] is None
    again = http.delete(f"/v1/jobs/{running['id']}")
    assert again.status_code == 409 and again.json()["error"]["code"] == "job_state_conflict"


def test_cancelled_job_can_be_retried_by_hand(http):
    job = http.post("/v1/jobs", json=long_job(1000)).json()
    http.delete(f"/v1/jobs/{job['id']}")
    retried = http.post(f"/v1/jobs/{job['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    wait_for(http, job["id"], {"processing"})
    http.delete(f"/v1/jobs/{job['id']}")
    done = http.post("/v1/jobs", json=chat_job()).json()
    wait_for(http, done["id"], {"completed"})
    assert http.post(f"/v1/jobs/{done['id']}/retry").status_code == 409


def test_realtime_request_goes_before_waiting_async_jobs(http, jobs_server):
    blocker = http.post("/v1/jobs", json=long_job(150)).json()
    wait_for(http, blocker["id"], {"processing"})
    waiting = [http.post("/v1/jobs", json=chat_job(20, ignore_eos=True)).json()["id"] for _ in range(2)]
    client = openai.OpenAI(base_url=f"{jobs_server}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=5)
    answered = time.time()
    assert reply.choices[0].message.role == "assistant"
    for job_id in waiting:
        job = wait_for(http, job_id, {"completed"})
        assert job["started_at"] >= answered - 0.05  # no waiting async job started before the realtime one finished


def test_events_stream_every_state_change_until_the_end(http):
    job = http.post("/v1/jobs", json=chat_job(30, ignore_eos=True)).json()
    events = []
    with http.stream("GET", f"/v1/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    statuses = [json.loads(e)["status"] for e in events[:-1] if json.loads(e)["type"] == "job.status"]
    assert statuses == ["queued", "processing", "completed"]


def test_list_filters_by_state_and_pages(http):
    ids = [http.post("/v1/jobs", json=chat_job(2)).json()["id"] for _ in range(3)]
    for job_id in ids:
        wait_for(http, job_id, {"completed"})
    page = http.get("/v1/jobs", params={"state": "completed", "limit": 2}).json()
    assert page["object"] == "list" and page["has_more"] and [j["id"] for j in page["data"]] == ids[::-1][:2]
    rest = http.get("/v1/jobs", params={"state": "completed", "limit": 2, "after": page["last_id"]}).json()
    assert rest["data"][0]["id"] == ids[0] and all(j["status"] == "completed" for j in rest["data"])


def test_another_tenants_job_is_not_found(http):
    job = http.post("/v1/jobs", json=chat_job(), headers={"X-Genloom-Tenant": "alice"}).json()
    assert http.get(f"/v1/jobs/{job['id']}", headers={"X-Genloom-Tenant": "alice"}).status_code == 200
    for call in (http.get, http.delete):
        other = call(f"/v1/jobs/{job['id']}", headers={"X-Genloom-Tenant": "bob"})
        assert other.status_code == 404 and other.json()["error"]["code"] == "job_not_found"
    listed = http.get("/v1/jobs", headers={"X-Genloom-Tenant": "bob"}).json()["data"]
    assert job["id"] not in {j["id"] for j in listed}


def test_a_flooding_tenant_gets_429_and_a_full_queue_503(http):
    blocker = http.post("/v1/jobs", json=long_job(1000), headers={"X-Genloom-Tenant": "flood"}).json()
    wait_for(http, blocker["id"], {"processing"}, headers={"X-Genloom-Tenant": "flood"})
    accepted = []
    try:
        for tenant in ("flood", "flood", "flood"):  # the tenant may hold half of 6 waiting slots
            accepted.append(http.post("/v1/jobs", json=long_job(), headers={"X-Genloom-Tenant": tenant}).json()["id"])
        refused = http.post("/v1/jobs", json=long_job(), headers={"X-Genloom-Tenant": "flood"})
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "tenant_queue_full"
        for tenant in ("b", "c", "d"):
            accepted.append(http.post("/v1/jobs", json=long_job(), headers={"X-Genloom-Tenant": tenant}).json()["id"])
        full = http.post("/v1/jobs", json=long_job(), headers={"X-Genloom-Tenant": "e"})
        assert full.status_code == 503 and full.headers["retry-after"] and full.json()["error"]["code"] == "queue_full"
    finally:
        for tenant, job_id in [("flood", blocker["id"])] + [(None, j) for j in accepted]:
            headers = {"X-Genloom-Tenant": tenant} if tenant else {}
            http.delete(f"/v1/jobs/{job_id}", headers=headers)
        for tenant in ("flood", "b", "c", "d"):
            for job in http.get("/v1/jobs", params={"limit": 100}, headers={"X-Genloom-Tenant": tenant}).json()["data"]:
                if job["status"] in {"queued", "processing", "retrying"}:
                    http.delete(f"/v1/jobs/{job['id']}", headers={"X-Genloom-Tenant": tenant})


@pytest.mark.parametrize(
    ("payload", "headers", "status", "param"),
    [
        ({"url": "/v1/embeddings", "body": {}}, {}, 400, "url"),
        ({"url": "/v1/chat/completions"}, {}, 400, "body"),
        (chat_job() | {"surprise": 1}, {}, 400, "surprise"),
        ({"url": "/v1/chat/completions", "body": {"model": "tiny"}}, {}, 400, "body.messages"),
        (chat_job(temperature=5), {}, 400, "body.temperature"),
        (chat_job(stream=True), {}, 400, "body.stream"),
        ({"url": "/v1/chat/completions", "body": {"model": "nope", "messages": HELLO}}, {}, 404, "model"),
        (chat_job(), {"X-Genloom-Tier": "gold"}, 400, "x-genloom-tier"),
        (chat_job() | {"callback_url": "http://127.0.0.1:9/hook"}, {}, 400, "callback_url"),
    ],
)
def test_bad_submissions_are_refused_in_openai_shape(http, payload, headers, status, param):
    answer = http.post("/v1/jobs", json=payload, headers=headers)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]


def test_malformed_json_and_bad_query_are_400(http):
    assert http.post("/v1/jobs", content=b"{nope", headers={"content-type": "application/json"}).status_code == 400
    assert http.get("/v1/jobs", params={"state": "sleeping"}).status_code == 400
    assert http.get("/v1/jobs", params={"limit": 1000}).json()["error"]["param"] == "limit"
    assert http.get("/v1/jobs", params={"after": "job_missing"}).status_code == 404
    assert http.get("/v1/jobs/job_missing/events").status_code == 404


def test_queue_events_push_the_queue_and_the_workers_every_interval(http):
    """GET /v1/admin/queue/events: a snapshot as GET /v1/admin/queue plus the workers, pushed
    until the client leaves; a job queued meanwhile shows in a later snapshot."""
    running = http.post("/v1/jobs", json=long_job(1000)).json()
    wait_for(http, running["id"], {"processing"})
    snapshots = []
    try:
        with http.stream("GET", "/v1/admin/queue/events", params={"every_s": 0.2}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if not line.startswith("data: "):
                    continue
                snapshots.append(json.loads(line[6:]))
                if len(snapshots) == 1:
                    queued = http.post("/v1/jobs", json=long_job()).json()
                if len(snapshots) == 3:
                    break
    finally:
        http.delete(f"/v1/jobs/{running['id']}")
        http.delete(f"/v1/jobs/{queued['id']}")
    assert [s["type"] for s in snapshots] == ["queue"] * 3 and snapshots[0]["at"] < snapshots[2]["at"]
    assert snapshots[-1]["models"]["tiny@v1"]["async"] == 1  # the job queued after the first snapshot
    slots = {s["model"]: s for w in snapshots[-1]["workers"] for s in w["models"]}
    assert slots["tiny@v1"]["occupancy"] >= 1  # the long job's row
