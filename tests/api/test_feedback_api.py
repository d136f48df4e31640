"""Feedback on answers over real HTTP with keys on: ratings of chat completions, completions,
responses and async jobs linked to what was asked and answered, another tenant's answers not
found, bad ratings refused by field, a second rating replacing the first, a tenant that keeps no
content, and the ratings in the monitors and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import openai
import pytest

from tests.api.conftest import running_server
from tests.api.test_auth import ADMIN_KEY, new_tenant
from tests.api.test_jobs_api import wait_for

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, object]]:
    with running_server(tmp_path_factory.mktemp("feedback"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY) as s:
        yield s


@pytest.fixture(scope="module")
def base(served) -> str:
    return served[0]


@pytest.fixture(scope="module")
def admin(base) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        yield client


def as_tenant(base: str, key: str) -> tuple[openai.OpenAI, httpx.Client]:
    return (openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0),
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30))


def test_a_rated_chat_completion_is_linked_to_its_prompt_answer_and_version(admin, base):
    _, key = new_tenant(admin, "rater")
    client, http = as_tenant(base, key)
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=6, user="end-user-7", temperature=0)
    rated = http.post("/v1/feedback", json={"response_id": answer.id, "rating": 1, "tags": ["concise"], "comment": "good"})
    assert rated.status_code == 200, rated.text
    body = rated.json()
    assert body["object"] == "feedback" and body["id"].startswith("fb_")
    assert (body["source"], body["model"], body["version"]) == ("request", "tiny", answer.system_fingerprint)
    assert (body["rating"], body["scale"], body["score"]) == (1, "thumbs", 1.0)
    assert body["prompt"] == HELLO and body["output"] == answer.choices[0].message.content
    assert body["user"] == "end-user-7" and body["tags"] == ["concise"] and body["replaced"] == []
    listed = http.get("/v1/feedback", params={"model": "tiny"}).json()
    assert [f["id"] for f in listed["data"]] == [body["id"]] and listed["has_more"] is False
    assert http.get(f"/v1/feedback/{body['id']}").json()["response_id"] == answer.id


def test_completions_responses_and_jobs_can_be_rated_too(admin, base):
    _, key = new_tenant(admin, "kinds")
    client, http = as_tenant(base, key)
    completion = client.completions.create(model="tiny", prompt="Once upon", max_tokens=4)
    response = client.responses.create(model="tiny", input="Hi", max_output_tokens=4)
    job = http.post("/v1/jobs", json={"url": "/v1/chat/completions",
                                      "body": {"model": "tiny", "messages": HELLO, "max_tokens": 3, "user": "u-job"}}).json()
    done = wait_for(http, job["id"], {"completed"})
    seen = {}
    for response_id, rating in ((completion.id, 5), (response.id, 2), (job["id"], -1)):
        r = http.post("/v1/feedback", json={"response_id": response_id, "rating": rating})
        assert r.status_code == 200, r.text
        seen[response_id] = r.json()
    assert seen[completion.id]["prompt"] == "Once upon" and seen[completion.id]["output"] == completion.choices[0].text
    assert (seen[completion.id]["scale"], seen[completion.id]["score"]) == ("stars", 1.0)
    assert seen[response.id]["source"] == "response" and seen[response.id]["output"] == response.output_text
    assert seen[response.id]["score"] == 0.25
    j = seen[job["id"]]
    assert (j["source"], j["score"], j["user"]) == ("job", 0.0, "u-job")
    assert j["prompt"] == HELLO and j["output"] == done["result"]["choices"][0]["message"]["content"]


def test_another_tenants_answer_is_not_found_and_admins_see_every_tenant(admin, base):
    _, alice = new_tenant(admin, "alice-fb")
    _, bob = new_tenant(admin, "bob-fb")
    alice_client, alice_http = as_tenant(base, alice)
    _, bob_http = as_tenant(base, bob)
    answer = alice_client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    for response_id in (answer.id, "chatcmpl-nothing", "job_nothing", "resp_nothing"):
        r = bob_http.post("/v1/feedback", json={"response_id": response_id, "rating": 1})
        assert r.status_code == 404, r.text
        assert r.json()["error"] | {"message": ""} == {"message": "", "type": "invalid_request_error",
                                                       "param": "response_id", "code": "response_not_found"}
    mine = alice_http.post("/v1/feedback", json={"response_id": answer.id, "rating": -1}).json()
    assert bob_http.get(f"/v1/feedback/{mine['id']}").status_code == 404
    assert mine["id"] not in {f["id"] for f in bob_http.get("/v1/feedback").json()["data"]}
    everyone = admin.get("/v1/feedback", params={"limit": 1000}).json()["data"]
    assert mine["id"] in {f["id"] for f in everyone}


@pytest.mark.parametrize(("body", "param"), [
    ({"rating": 0}, "rating"),
    ({"rating": 6}, "rating"),
    ({"rating": -2}, "rating"),
    ({"rating": 3, "scale": "thumbs"}, "rating"),
    ({"rating": -1, "scale": "stars"}, "rating"),
    ({"rating": "5"}, "rating"),
    ({"rating": True}, "rating"),
    ({"rating": 1, "scale": "emoji"}, "scale"),
    ({"rating": 1, "correction": "   "}, "correction"),
    ({"rating": 1, "tags": ["x"] * 17}, "tags"),
    ({"rating": 1, "tags": [""]}, "tags"),
    ({"rating": 1, "comment": "x" * 5000}, "comment"),
    ({"rating": 1, "stars": 5}, "stars"),
])
def test_bad_ratings_are_refused_by_field(admin, base, body, param):
    _, key = new_tenant(admin, f"bad-{abs(hash(str(body))) % 10**8}")
    client, http = as_tenant(base, key)
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    r = http.post("/v1/feedback", json={"response_id": answer.id} | body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    assert http.get("/v1/feedback").json()["data"] == []  # nothing stored


def test_a_second_rating_replaces_the_first(admin, base):
    _, key = new_tenant(admin, "fickle")
    client, http = as_tenant(base, key)
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    first = http.post("/v1/feedback", json={"response_id": answer.id, "rating": 1}).json()
    second = http.post("/v1/feedback", json={"response_id": answer.id, "rating": 1, "scale": "stars",
                                             "correction": "Hello! How can I help?"}).json()
    assert second["replaced"] == [first["id"]] and second["score"] == 0.0
    assert [f["id"] for f in http.get("/v1/feedback").json()["data"]] == [second["id"]]
    assert http.get(f"/v1/feedback/{first['id']}").status_code == 404


def test_a_tenant_that_keeps_no_content_stores_only_what_it_sends(admin, base, served):
    _, server = served
    tenant_id, key = new_tenant(admin, "private")
    assert admin.patch(f"/v1/admin/tenants/{tenant_id}", json={"keep_content": False}).json()["keep_content"] is False
    client, http = as_tenant(base, key)
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "my secret plan"}],
                                            max_tokens=3)
    rated = http.post("/v1/feedback", json={"response_id": answer.id, "rating": -1, "correction": "A better answer."}).json()
    assert rated["prompt"] is None and rated["output"] is None
    assert (rated["correction"], rated["version"]) == ("A better answer.", answer.system_fingerprint)
    entry = asyncio.run(server.request_log.get(answer.id))
    assert entry is not None and entry.prompt is None and entry.output is None and entry.tenant == tenant_id
    assert entry.completion_tokens == answer.usage.completion_tokens  # the figures stay


def test_old_request_content_is_dropped_and_feedback_keeps_its_own_copy(admin, base, served):
    _, server = served
    _, key = new_tenant(admin, "aging")
    client, http = as_tenant(base, key)
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3)
    rated = http.post("/v1/feedback", json={"response_id": answer.id, "rating": 1}).json()
    dropped = asyncio.run(server.request_log.drop_content(before=datetime.now(UTC) + timedelta(seconds=1)))
    assert dropped >= 1
    entry = asyncio.run(server.request_log.get(answer.id))
    assert entry.prompt is None and entry.output is None and entry.version == answer.system_fingerprint
    kept = http.get(f"/v1/feedback/{rated['id']}").json()
    assert kept["prompt"] == HELLO and kept["output"] == answer.choices[0].message.content


def test_ratings_reach_the_monitors_and_metrics(admin, base):
    _, key = new_tenant(admin, "measured")
    client, http = as_tenant(base, key)
    for rating in (5, 4, 1):
        answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
        assert http.post("/v1/feedback", json={"response_id": answer.id, "rating": rating, "scale": "stars"}).status_code == 200
    quality = admin.get("/v1/admin/monitors/tiny").json()["quality"][answer.system_fingerprint]
    assert quality["feedback_n"] >= 3 and quality["feedback_mean_score"] is not None
    metrics = httpx.get(f"{base}/metrics").text
    assert f'genloom_feedback_total{{model="tiny",sentiment="positive",version="{answer.system_fingerprint}"}}' in metrics
    assert f'genloom_feedback_score_count{{model="tiny",version="{answer.system_fingerprint}"}}' in metrics
