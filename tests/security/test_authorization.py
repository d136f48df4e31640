"""Who may call what, generated from the app's own routes: every admin route refuses a tenant key
(403) and a missing key (401), every route is classified (a new one fails here until it is), and
what one tenant made is, to another tenant, as if it did not exist (404, never 403)."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from fastapi.routing import iter_route_contexts

from tests.security.conftest import ADMIN_KEY, Tenant, new_tenant, secured_server

HELLO = [{"role": "user", "content": "hello"}]

# Open to anyone: probes, the API's own description, and /metrics (its own token, metrics.token).
PUBLIC = {
    ("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"), ("GET", "/redoc"),
    # The console's static page, script and style: what they show comes from keyed routes.
    ("GET", "/console"), ("GET", "/console/"), ("GET", "/console/assets/{name}"),
}
# Any key, answering for the key's tenant only. Everything under /v1/admin/ is admin by rule.
TENANT = {
    ("GET", "/v1/me"), ("GET", "/v1/usage"), ("GET", "/v1/models"), ("GET", "/v1/models/{model_id:path}"),
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"),
    ("POST", "/v1/images/generations"), ("POST", "/v1/moderations"),
    ("POST", "/v1/responses"), ("GET", "/v1/responses/{response_id}"), ("DELETE", "/v1/responses/{response_id}"),
    ("POST", "/v1/batches"), ("GET", "/v1/batches"), ("GET", "/v1/batches/{batch_id}"),
    ("POST", "/v1/batches/{batch_id}/cancel"),
    ("POST", "/v1/jobs"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{job_id}"), ("DELETE", "/v1/jobs/{job_id}"),
    ("POST", "/v1/jobs/{job_id}/retry"), ("GET", "/v1/jobs/{job_id}/events"),
    ("POST", "/v1/files"), ("GET", "/v1/files"), ("GET", "/v1/files/{file_id}"), ("DELETE", "/v1/files/{file_id}"),
    ("GET", "/v1/files/{file_id}/content"),
    ("POST", "/v1/templates/{name}/render"), ("POST", "/v1/scenarios/{name}/run"),
    ("POST", "/v1/feedback"), ("GET", "/v1/feedback"), ("GET", "/v1/feedback/{feedback_id}"),
    ("POST", "/v1/fine_tuning/jobs"), ("GET", "/v1/fine_tuning/jobs"), ("GET", "/v1/fine_tuning/jobs/{job_id}"),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"), ("GET", "/v1/fine_tuning/jobs/{job_id}/events"),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"),
}
ADMIN_PREFIX = "/v1/admin/"
_PARAM = re.compile(r"\{[^}]+\}")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, object]]:
    with secured_server(tmp_path_factory.mktemp("authz"), tiny_model_dir) as s:
        yield s


@pytest.fixture(scope="module")
def base(served) -> str:
    return served[0]


@pytest.fixture(scope="module")
def alice(base) -> Tenant:
    return new_tenant(base, "alice")


@pytest.fixture(scope="module")
def bob(base) -> Tenant:
    return new_tenant(base, "bob")


def routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves; HEAD goes with GET."""
    found = set()
    for route in iter_route_contexts(app.routes):
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return sorted(found)


def is_admin(path: str) -> bool:
    return path.startswith(ADMIN_PREFIX) or path == ADMIN_PREFIX.rstrip("/")


def concrete(path: str) -> str:
    """The template with a plausible value in every path parameter."""
    return _PARAM.sub("v1", path)


def test_every_route_is_classified_as_public_tenant_or_admin(served):
    unclassified = [(m, p) for m, p in routes(served[1].app) if (m, p) not in PUBLIC | TENANT and not is_admin(p)]
    assert not unclassified, (
        f"routes nobody classified: {unclassified}; add each to PUBLIC or TENANT in this file "
        f"(or serve it under {ADMIN_PREFIX}, where a tenant key gets 403)"
    )


def test_every_admin_route_refuses_a_tenant_key_with_403(served, alice):
    admin_routes = [(m, p) for m, p in routes(served[1].app) if is_admin(p)]
    assert len(admin_routes) > 30  # tenants, keys, models, rollouts, templates, scenarios, monitors, ...
    with httpx.Client(base_url=served[0], headers=alice.headers, timeout=30) as http:
        for method, path in admin_routes:
            answer = http.request(method, concrete(path), json={})
            assert answer.status_code == 403, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"]["type"] == "permission_error", (method, path)


def test_every_route_but_the_public_ones_refuses_a_request_without_a_key_with_401(served):
    guarded = [(m, p) for m, p in routes(served[1].app) if (m, p) not in PUBLIC]
    with httpx.Client(base_url=served[0], timeout=30) as http:
        for method, path in guarded:
            answer = http.request(method, concrete(path), json={})
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "invalid_api_key", (method, path)


def test_the_admin_key_passes_the_admin_check(base):
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as http:
        assert http.get("/v1/admin/tenants").status_code == 200


def _client(base: str, tenant: Tenant) -> httpx.Client:
    return httpx.Client(base_url=base, headers=tenant.headers, timeout=60)


def _unique_bytes() -> bytes:
    return f'{{"custom_id": "{uuid.uuid4().hex}", "method": "POST", "url": "/v1/chat/completions", ' \
           f'"body": {{"model": "tiny", "messages": [{{"role": "user", "content": "hi"}}], "max_tokens": 2}}}}\n'.encode()


def test_another_tenants_job_is_not_found(base, alice, bob):
    with _client(base, alice) as a, _client(base, bob) as b:
        job = a.post("/v1/jobs", headers={"Idempotency-Key": "same-key"},
                     json={"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2}})
        assert job.status_code == 202, job.text
        job_id = job.json()["id"]
        for method, path in (("GET", f"/v1/jobs/{job_id}"), ("DELETE", f"/v1/jobs/{job_id}"),
                             ("POST", f"/v1/jobs/{job_id}/retry"), ("GET", f"/v1/jobs/{job_id}/events")):
            answer = b.request(method, path)
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "job_not_found"
        assert job_id not in {j["id"] for j in b.get("/v1/jobs").json()["data"]}
        # The same idempotency key is another tenant's own: a new job, never a replay of alice's.
        replay = b.post("/v1/jobs", headers={"Idempotency-Key": "same-key"},
                        json={"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2}})
        assert replay.status_code == 202 and replay.json()["id"] != job_id and "idempotent-replayed" not in replay.headers
        assert a.get(f"/v1/jobs/{job_id}").status_code == 200  # still there for its owner


def test_an_admin_key_sees_every_tenants_jobs_and_a_tenant_key_only_its_own(base, alice, bob):
    body = {"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2}}
    with _client(base, alice) as a, _client(base, bob) as b, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        job_id = a.post("/v1/jobs", json=body).json()["id"]
        assert admin.get(f"/v1/jobs/{job_id}").status_code == 200  # an operator opens any tenant's job
        assert job_id not in {j["id"] for j in admin.get("/v1/jobs").json()["data"]}  # by default, its own tenant's
        for scope in (alice.id, "*"):
            assert job_id in {j["id"] for j in admin.get("/v1/jobs", params={"tenant": scope, "limit": 100}).json()["data"]}
        assert admin.get("/v1/jobs", params={"tenant": alice.id, "model": "other"}).json()["data"] == []
        assert job_id in {j["id"] for j in admin.get("/v1/jobs", params={"tenant": "*", "model": "tiny"}).json()["data"]}
        assert job_id not in {j["id"] for j in b.get("/v1/jobs", params={"tenant": "*", "limit": 100}).json()["data"]}


def test_usage_and_answers_to_review_stay_within_their_tenant(base, alice, bob):
    """A tenant key's usage is its own whatever it asks for; the review queue (every end user's
    prompts and answers) is for admin keys, and shows the tenant asked for."""
    with _client(base, alice) as a, _client(base, bob) as b, \
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        answered = a.post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 2})
        assert answered.status_code == 200, answered.text
        theirs = b.get("/v1/usage", params={"tenant": alice.id}).json()
        assert theirs["tenant"] == bob.id and theirs["tenants"] == [bob.id]
        assert sum(x["requests"] for x in theirs["data"]) == 0
        assert sum(x["requests"] for x in a.get("/v1/usage").json()["data"]) >= 1
        assert sum(x["requests"] for x in admin.get("/v1/usage", params={"tenant": alice.id}).json()["data"]) >= 1
        assert b.get("/v1/admin/feedback/queue", params={"tenant": alice.id}).status_code == 403
        queue = admin.get("/v1/admin/feedback/queue", params={"tenant": alice.id}).json()["data"]
        assert answered.json()["id"] in {c["response_id"] for c in queue} and {c["tenant"] for c in queue} == {alice.id}


def test_another_tenants_file_is_not_found_and_not_deleted(base, alice, bob):
    data = _unique_bytes()
    with _client(base, alice) as a, _client(base, bob) as b:
        uploaded = a.post("/v1/files", files={"file": ("in.jsonl", data)}, data={"purpose": "batch"})
        assert uploaded.status_code == 200, uploaded.text
        file_id = uploaded.json()["id"]
        for method, path in (("GET", f"/v1/files/{file_id}"), ("GET", f"/v1/files/{file_id}/content"),
                             ("DELETE", f"/v1/files/{file_id}")):
            answer = b.request(method, path)
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "file_not_found"
        assert file_id not in {f["id"] for f in b.get("/v1/files").json()["data"]}
        # A forged signature opens nothing either.
        forged = b.get(f"/v1/files/{file_id}/content", params={"expires": int(time.time()) + 60, "signature": "0" * 64})
        assert forged.status_code == 404
        # Nor can bob run a batch on alice's file.
        batch = b.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
        assert batch.status_code == 404 and batch.json()["error"]["code"] == "file_not_found"
        assert a.get(f"/v1/files/{file_id}/content").content == data  # alice's file is intact


def test_another_tenants_batch_is_not_found(base, alice, bob):
    with _client(base, alice) as a, _client(base, bob) as b:
        file_id = a.post("/v1/files", files={"file": ("in.jsonl", _unique_bytes())}, data={"purpose": "batch"}).json()["id"]
        batch = a.post("/v1/batches", json={"input_file_id": file_id, "endpoint": "/v1/chat/completions"})
        assert batch.status_code == 200, batch.text
        batch_id = batch.json()["id"]
        for method, path in (("GET", f"/v1/batches/{batch_id}"), ("POST", f"/v1/batches/{batch_id}/cancel")):
            answer = b.request(method, path)
            assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "batch_not_found"
        assert batch_id not in {x["id"] for x in b.get("/v1/batches").json()["data"]}
        assert a.get(f"/v1/batches/{batch_id}").status_code == 200


def test_another_tenants_stored_response_is_not_found_nor_continued(base, alice, bob):
    with _client(base, alice) as a, _client(base, bob) as b:
        made = a.post("/v1/responses", json={"model": "tiny", "input": "hello", "max_output_tokens": 2, "store": True})
        assert made.status_code == 200, made.text
        response_id = made.json()["id"]
        for method in ("GET", "DELETE"):
            answer = b.request(method, f"/v1/responses/{response_id}")
            assert answer.status_code == 404, (method, answer.status_code, answer.text)
            assert answer.json()["error"]["code"] == "response_not_found"
        continued = b.post("/v1/responses", json={"model": "tiny", "input": "and then?", "max_output_tokens": 2,
                                                  "previous_response_id": response_id})
        assert continued.status_code == 404 and continued.json()["error"]["code"] == "response_not_found"
        assert a.get(f"/v1/responses/{response_id}").status_code == 200


def test_another_tenants_answers_cannot_be_rated_nor_their_ratings_read(base, alice, bob):
    with _client(base, alice) as a, _client(base, bob) as b:
        made = a.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                                   "max_tokens": 2})
        assert made.status_code == 200, made.text
        rated = b.post("/v1/feedback", json={"response_id": made.json()["id"], "rating": -1})
        assert rated.status_code == 404 and rated.json()["error"]["code"] == "response_not_found"
        mine = a.post("/v1/feedback", json={"response_id": made.json()["id"], "rating": 1})
        assert mine.status_code == 200, mine.text
        assert b.get(f"/v1/feedback/{mine.json()['id']}").status_code == 404
        assert mine.json()["id"] not in {f["id"] for f in b.get("/v1/feedback", params={"tenant": alice.id}).json()["data"]}
