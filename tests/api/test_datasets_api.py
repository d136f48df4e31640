"""Datasets over real HTTP: built from feedback (ratings select, corrections become targets, PII
scrubbed, duplicates dropped, a stable split), from logged requests and from an uploaded file;
rebuilt to the same version; exported in OpenAI's chat fine-tuning format; and a user's data
forgotten end to end (requests, feedback, cached answers, dataset rows in new versions, old
versions' files deleted, the deletion recorded)."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import httpx
import openai
import pyarrow.parquet as pq
import pytest

from tests.api.conftest import running_server
from tests.api.test_auth import ADMIN_KEY, new_tenant
from tests.stub_upstream import Behaviour, running_stub

TOPICS = ["bread", "tides", "violins", "glaciers", "comets", "bees", "granite", "kites", "owls", "lanterns", "ferns", "rivers"]


def answer(question: str) -> str:
    """The stub model's answer: plain sentences about the question's last word (a random tiny
    model's text could be dropped as garbled or repetitive, which is not what these tests are about)."""
    topic = question.split("about ")[-1].split(".")[0] if "about " in question else "that"
    return f"Here are two sentences about {topic}. People have written about {topic} for a very long time."


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, object]]:
    with running_stub(Behaviour(answer=answer, chunks=2)) as stub:
        models = [{"name": "tiny", "kind": "remote", "base_url": stub.base_url}]
        with running_server(tmp_path_factory.mktemp("datasets"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY,
                            models=models) as s:
            yield s


@pytest.fixture(scope="module")
def admin(served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def rated(served, admin) -> dict:
    """A tenant whose users asked 12 questions (one twice, one holding an email address) and rated
    the answers: 5 stars for most, 1 star for two (one of them corrected)."""
    base = served[0]
    tenant_id, key = new_tenant(admin, "loop")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    answers = []
    for i, topic in enumerate(TOPICS):
        content = f"Write two sentences about {topic}." + (" Reply to ada.lovelace@example.com." if i == 3 else "")
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}],
                                                max_tokens=12, temperature=0, user="u1" if i % 2 else "u2")
        answers.append(answer)
        rating = 1 if i in (4, 5) else 5
        body = {"response_id": answer.id, "rating": rating, "scale": "stars"}
        if i == 5:
            body["correction"] = f"{topic.title()} are lovely. Everyone should see {topic} at least once."
        assert http.post("/v1/feedback", json=body).status_code == 200
    again = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Write two sentences about bread."}],
                                           max_tokens=12, temperature=0, user="u2")
    assert again.choices[0].message.content == answers[0].choices[0].message.content
    http.post("/v1/feedback", json={"response_id": again.id, "rating": 5, "scale": "stars"})
    return {"tenant": tenant_id, "key": key, "http": http, "answers": answers}


def build(admin: httpx.Client, body: dict) -> httpx.Response:
    return admin.post("/v1/admin/datasets", json=body)


def test_a_dataset_from_feedback_selects_cleans_dedupes_scrubs_and_splits(admin, rated, served):
    r = build(admin, {"name": "from-feedback", "source": {"type": "feedback", "tenant": rated["tenant"]},
                      "settings": {"eval_fraction": 0.25, "seed": 1}, "metric": {"type": "pattern", "pattern": r"\."}})
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["id"] == "from-feedback@v1" and d["status"] == "active" and d["created"] is True
    m = d["manifest"]
    assert m["counts"]["read"] == 13 and m["dropped"]["low_rating"] == 1  # the 1-star answer without a correction
    assert m["counts"]["selected"] == 12 and m["dropped"].get("duplicate") == 1  # the repeated question
    assert m["counts"]["train"] + m["counts"]["eval"] == d["rows"] == 11
    assert m["counts"]["pii_scrubbed_rows"] == 1 and m["pii_placeholders"]["EMAIL"] >= 1
    assert m["sha256"] == d["sha256"] and len(m["files"]["parquet"]) == 64 and m["metric"]["type"] == "pattern"
    assert m["lineage"]["request_ids"] == 11 and m["lineage"]["versions"]
    lines = [json.loads(x) for split in ("train", "eval")
             for x in admin.get("/v1/admin/datasets/from-feedback/content", params={"split": split}).text.splitlines()]
    assert len(lines) == 11
    texts = {line["messages"][0]["content"]: line["messages"][-1]["content"] for line in lines}
    assert texts["Write two sentences about bees."] == "Bees are lovely. Everyone should see bees at least once."
    assert any("<EMAIL_1>" in q for q in texts) and not any("ada.lovelace" in q + a for q, a in texts.items())
    assert all(line["messages"][-1]["role"] == "assistant" for line in lines)
    # Every row's lineage names one of the rated requests and the rating behind it.
    parquet = served[1].c.images.files.blobs.get(m["files"]["parquet"])
    lineage = [json.loads(r["lineage"]) for r in pq.read_table(io.BytesIO(parquet)).to_pylist()]
    assert {row["request_id"] for row in lineage} <= {a.id for a in rated["answers"]} and len(lineage) == 11
    assert all(row["source"] == "feedback" and row["feedback_id"].startswith("fb_") for row in lineage)
    again = build(admin, {"name": "from-feedback", "source": {"type": "feedback", "tenant": rated["tenant"]},
                          "settings": {"eval_fraction": 0.25, "seed": 1}})
    assert again.status_code == 200 and again.json()["id"] == "from-feedback@v1" and again.json()["created"] is False


def test_datasets_from_requests_and_from_a_file(admin, rated, served):
    r = build(admin, {"name": "from-requests", "source": {"type": "requests", "tenant": rated["tenant"], "model": "tiny"},
                      "settings": {"near_duplicate_threshold": 1.0}})
    assert r.status_code == 201, r.text
    assert r.json()["manifest"]["counts"]["read"] == 13 and r.json()["manifest"]["lineage"]["rows_by_source"] == {"requests": 12}
    good = [{"messages": [{"role": "user", "content": f"Name a {t}"}, {"role": "assistant", "content": f"A {t} named Bo."}]}
            for t in TOPICS]
    data = "\n".join([json.dumps(x) for x in good[:6]] + ["{not json", json.dumps({"messages": "x"})]
                     + [json.dumps(x) for x in good[6:]]).encode()
    upload = rated["http"].post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("train.jsonl", data)})
    assert upload.status_code == 200, upload.text
    r = build(admin, {"name": "from-file", "source": {"type": "file", "tenant": rated["tenant"], "file_id": upload.json()["id"]}})
    assert r.status_code == 201, r.text
    m = r.json()["manifest"]
    assert m["counts"]["read"] == 14 and m["dropped"]["invalid_line"] == 2 and r.json()["rows"] == 12
    assert [e["line"] for e in m["errors"]] == [7, 8] and "not JSON" in m["errors"][0]["error"]


@pytest.mark.parametrize(("body", "status", "param"), [
    ({"name": "bad name!", "source": {"type": "feedback"}}, 400, "name"),
    ({"name": "x", "source": {"type": "emails"}}, 400, "source.type"),
    ({"name": "x", "source": {"type": "file"}}, 400, "source.file_id"),
    ({"name": "x", "source": {"type": "feedback", "tenant": "nobody"}}, 400, "source"),
    ({"name": "x", "source": {"type": "feedback"}, "settings": {"eval_fraction": 1.5}}, 400, "settings.eval_fraction"),
    ({"name": "x", "source": {"type": "feedback"}, "metric": {"type": "pattern", "pattern": "("}}, 400, "metric.pattern"),
    ({"name": "x", "source": {"type": "feedback"}, "extra": 1}, 400, "extra"),
])
def test_bad_builds_are_refused_by_field(admin, body, status, param):
    r = build(admin, body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


def test_datasets_are_admin_only_and_unknown_ones_are_404(admin, rated):
    assert rated["http"].get("/v1/admin/datasets").status_code == 403
    assert rated["http"].post("/v1/admin/datasets", json={"name": "x", "source": {"type": "feedback"}}).status_code == 403
    missing = admin.get("/v1/admin/datasets/nothing@v3")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "dataset_not_found"
    assert admin.get("/v1/admin/datasets/not a ref").status_code == 400


def test_forgetting_a_user_removes_their_data_everywhere(admin, rated, served):
    base, server = served
    tenant, http = rated["tenant"], rated["http"]
    first = build(admin, {"name": "forget-me", "source": {"type": "feedback", "tenant": rated["tenant"]},
                          "settings": {"eval_fraction": 0.25, "seed": 1}}).json()
    u1_ids = {a.id for i, a in enumerate(rated["answers"]) if i % 2}
    cached = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {rated['key']}"},
                        json={"model": "tiny", "messages": [{"role": "user", "content": "Write two sentences about tides."}],
                              "max_tokens": 12, "temperature": 0, "user": "u1"})
    assert cached.headers["x-genloom-cache"] == "hit"
    blobs = server.c.images.files.blobs
    before = pq.read_table(io.BytesIO(blobs.get(first["manifest"]["files"]["parquet"]))).to_pylist()
    splits_before = {json.loads(r["lineage"])["request_id"]: r["split"] for r in before}
    gone = admin.delete(f"/v1/admin/tenants/{tenant}/data", params={"user": "u1"})
    assert gone.status_code == 200, gone.text
    removed = gone.json()["removed"]
    assert removed["requests"] == 7 and removed["feedback"] == 6 and removed["cached_answers"] >= 1
    assert removed["dataset_rows"] == 3 * 6  # u1's six answers in each of the datasets built from feedback and requests
    assert {"superseded": "forget-me@v1", "by": "forget-me@v2"} in removed["datasets"]
    assert gone.json()["user_sha256"] != "u1" and len(gone.json()["user_sha256"]) == 64
    # Requests and feedback are gone; the other user's stay.
    assert not u1_ids & {f["response_id"] for f in http.get("/v1/feedback", params={"limit": 1000}).json()["data"]}
    for response_id in u1_ids:
        assert asyncio.run(server.request_log.get(response_id)) is None
    assert asyncio.run(server.request_log.get(rated["answers"][0].id)) is not None
    # The old version is superseded with its files deleted; the new one has no u1 rows.
    old = admin.get("/v1/admin/datasets/forget-me@v1").json()
    assert old["status"] == "superseded" and old["superseded_by"] == "forget-me@v2"
    assert admin.get("/v1/admin/datasets/forget-me@v1/content").status_code == 400
    with pytest.raises(FileNotFoundError):
        blobs.get(first["manifest"]["files"]["parquet"])
    new = admin.get("/v1/admin/datasets/forget-me").json()
    assert new["id"] == "forget-me@v2" and new["rows"] == first["rows"] - 6
    rows = pq.read_table(io.BytesIO(blobs.get(new["manifest"]["files"]["parquet"]))).to_pylist()
    assert {r["user"] for r in rows} == {"u2"}
    assert not u1_ids & {json.loads(r["lineage"])["request_id"] for r in rows}
    splits_after = {json.loads(r["lineage"])["request_id"]: r["split"] for r in rows}
    assert splits_after == {k: v for k, v in splits_before.items() if k not in u1_ids}  # the rows that stayed keep their split
    assert new["manifest"]["counts"]["train"] + new["manifest"]["counts"]["eval"] == new["rows"]
    assert new["manifest"]["derived_from"] == "forget-me@v1" and new["manifest"]["removed_rows"] == 6
    # Every other dataset holding u1's rows was replaced too (the file's rows have no user); the cache no longer answers.
    assert {d["superseded"] for d in removed["datasets"]} == {"from-feedback@v1", "from-requests@v1", "forget-me@v1"}
    again = httpx.post(f"{base}/v1/chat/completions", headers={"Authorization": f"Bearer {rated['key']}"},
                       json={"model": "tiny", "messages": [{"role": "user", "content": "Write two sentences about tides."}],
                             "max_tokens": 12, "temperature": 0})
    assert again.headers["x-genloom-cache"] == "miss"
    [record] = admin.get(f"/v1/admin/tenants/{tenant}/deletions").json()["data"]
    assert record["id"] == gone.json()["id"] and record["removed"]["requests"] == 7


def test_forgetting_covers_ratings_made_by_someone_else_and_older_versions(admin, served):
    tenant, key = new_tenant(admin, "agency")
    http = httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {key}"}, timeout=30)
    client = openai.OpenAI(base_url=f"{served[0]}/v1", api_key=key, max_retries=0)
    answers = [client.chat.completions.create(model="tiny", user=user, max_tokens=12, temperature=0,
                                              messages=[{"role": "user", "content": f"Write two sentences about {topic}."}])
               for user, topic in (("u9", "quartz"), ("u8", "basalt"), ("u8", "marble"))]
    # An agent rates u9's answer: the rating names the agent, the content is u9's.
    for a in answers[:2]:
        assert http.post("/v1/feedback", json={"response_id": a.id, "rating": 5, "scale": "stars", "user": "agent"}).status_code == 200
    source = {"type": "feedback", "tenant": tenant}
    v1 = build(admin, {"name": "agents", "source": source, "settings": {"eval_fraction": 0.0}}).json()
    assert http.post("/v1/feedback", json={"response_id": answers[2].id, "rating": 5, "scale": "stars"}).status_code == 200
    v2 = build(admin, {"name": "agents", "source": source, "settings": {"eval_fraction": 0.0}}).json()
    assert (v1["id"], v1["rows"], v2["id"], v2["rows"]) == ("agents@v1", 2, "agents@v2", 3)
    gone = admin.delete(f"/v1/admin/tenants/{tenant}/data", params={"user": "u9"}).json()["removed"]
    assert gone["requests"] == 1 and gone["feedback"] == 1  # the agent's rating of u9's answer went too
    mine = [d for d in gone["datasets"] if d["superseded"].startswith("agents@")]
    assert sorted(mine, key=lambda d: d["superseded"]) == [{"superseded": "agents@v1", "by": None},
                                                           {"superseded": "agents@v2", "by": "agents@v3"}]
    newest = admin.get("/v1/admin/datasets/agents").json()
    assert (newest["id"], newest["rows"]) == ("agents@v3", 2)  # the newest is still the newest content, less u9
    left = [json.loads(x)["messages"][0]["content"] for x in
            admin.get("/v1/admin/datasets/agents/content", params={"split": "train"}).text.splitlines()]
    assert sorted(left) == ["Write two sentences about basalt.", "Write two sentences about marble."]
