"""API keys, tenants and the admin scope over real HTTP, with auth on (the default)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import running_server

ADMIN_KEY = "gl-" + "a" * 43
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    with running_server(tmp_path_factory.mktemp("auth"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY) as (url, _):
        yield url


@pytest.fixture(scope="module")
def admin(base) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as client:
        yield client


def new_tenant(admin: httpx.Client, name: str, tier: str = "standard") -> tuple[str, str]:
    tenant = admin.post("/v1/admin/tenants", json={"name": name, "tier": tier, "limits": {"requests_per_minute": 600}})
    assert tenant.status_code == 201, tenant.text
    key = admin.post(f"/v1/admin/tenants/{tenant.json()['id']}/keys", json={"name": "ci"})
    assert key.status_code == 201 and key.headers["cache-control"] == "no-store"
    return tenant.json()["id"], key.json()["key"]


def test_every_v1_route_needs_a_key_but_health_does_not(base):
    assert httpx.get(f"{base}/healthz").status_code == 200 and httpx.get(f"{base}/readyz").status_code == 200
    for method, path in (("GET", "/v1/models"), ("POST", "/v1/chat/completions"), ("GET", "/v1/jobs"),
                         ("GET", "/v1/admin/tenants")):
        answer = httpx.request(method, f"{base}{path}", json={})
        assert answer.status_code == 401, path
        assert answer.json()["error"]["code"] == "invalid_api_key" and answer.headers["www-authenticate"] == "Bearer"
    bad = openai.OpenAI(base_url=f"{base}/v1", api_key="gl-" + "b" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{base}/v1", api_key="sk-wrong-shape", max_retries=0).models.list()


def test_admin_creates_a_tenant_and_a_key_shown_once(admin, base):
    tenant_id, key = new_tenant(admin, "acme")
    assert key.startswith("gl-")
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    reply = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3)
    assert reply.choices[0].message.role == "assistant"
    listed = admin.get(f"/v1/admin/tenants/{tenant_id}/keys").json()["data"]
    assert [k["prefix"] for k in listed] == [key[:10]]
    assert all("key" not in k and key not in str(k) for k in listed)  # never shown again, not even hashed
    assert admin.post("/v1/admin/tenants", json={"name": "acme"}).status_code == 409


def test_a_tenant_key_cannot_use_admin_routes(admin, base):
    _, key = new_tenant(admin, "plain")
    answer = httpx.get(f"{base}/v1/admin/tenants", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 403 and answer.json()["error"]["type"] == "permission_error"


def test_a_tenant_never_sees_another_tenants_jobs(admin, base):
    alice_id, alice = new_tenant(admin, "alice")
    _, bob = new_tenant(admin, "bob")
    as_alice = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {alice}"})
    as_bob = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {bob}"})
    job = as_alice.post("/v1/jobs", json={"url": "/v1/chat/completions",
                                          "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2}}).json()
    assert job["tier"] == "standard"  # the tenant's tier, not a header
    assert as_alice.get(f"/v1/jobs/{job['id']}").status_code == 200
    assert as_bob.get(f"/v1/jobs/{job['id']}").status_code == 404
    assert as_bob.delete(f"/v1/jobs/{job['id']}").status_code == 404
    assert job["id"] not in {j["id"] for j in as_bob.get("/v1/jobs").json()["data"]}
    # A header cannot claim another tenant or tier once keys are on.
    assert as_bob.get(f"/v1/jobs/{job['id']}", headers={"X-Genloom-Tenant": alice_id}).status_code == 404


def test_revoked_and_expired_keys_stop_working(admin, base):
    tenant_id, key = new_tenant(admin, "temp")
    headers = {"Authorization": f"Bearer {key}"}
    assert httpx.get(f"{base}/v1/models", headers=headers).status_code == 200
    [listed] = admin.get(f"/v1/admin/tenants/{tenant_id}/keys").json()["data"]
    revoked = admin.delete(f"/v1/admin/keys/{listed['id']}").json()
    assert revoked["revoked_at"] is not None
    refused = httpx.get(f"{base}/v1/models", headers=headers)
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
    short = admin.post(f"/v1/admin/tenants/{tenant_id}/keys", json={"name": "short", "expires_in_days": 0.00002}).json()
    time.sleep(2)
    expired = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {short['key']}"})
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]


def test_admin_updates_a_tenants_tier_and_limits(admin):
    tenant_id, _ = new_tenant(admin, "growing", tier="free")
    updated = admin.patch(f"/v1/admin/tenants/{tenant_id}", json={"tier": "premium", "limits": {"tokens_per_day": 1000}})
    assert updated.json()["tier"] == "premium" and updated.json()["limits"] == {"tokens_per_day": 1000}
    assert admin.get(f"/v1/admin/tenants/{tenant_id}").json()["tier"] == "premium"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    [
        ("POST", "/v1/admin/tenants", {"name": "x", "tier": "gold"}, 400, "tier"),
        ("POST", "/v1/admin/tenants", {"name": "bad name!"}, 400, "name"),
        ("POST", "/v1/admin/tenants", {"name": "y", "limits": {"requests_per_minute": 0}}, 400, "limits.requests_per_minute"),
        ("POST", "/v1/admin/tenants/ten_missing/keys", {"name": "k"}, 404, "tenant_id"),
        ("DELETE", "/v1/admin/keys/key_missing", None, 404, "key_id"),
        ("PATCH", "/v1/admin/tenants/ten_missing", {"tier": "free"}, 404, "tenant_id"),
    ],
)
def test_bad_admin_requests_answer_in_openai_shape(admin, method, path, body, status, param):
    answer = admin.request(method, path, json=body)
    assert answer.status_code == status
    assert answer.json()["error"]["param"] == param


def test_a_tenant_over_its_request_limit_gets_429_with_rate_limit_headers(admin, base):
    tenant = admin.post("/v1/admin/tenants", json={"name": "metered", "limits": {"requests_per_minute": 2}}).json()
    key = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "k"}).json()["key"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    first = client.chat.completions.with_raw_response.create(model="tiny", messages=HELLO, max_tokens=2)
    assert first.headers["x-ratelimit-limit-requests"] == "2" and first.headers["x-ratelimit-remaining-requests"] == "1"
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert "2 requests per minute" in refused.value.message
    job = httpx.post(f"{base}/v1/jobs", headers={"Authorization": f"Bearer {key}"},
                     json={"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO}})
    assert job.status_code == 429 and job.json()["error"]["type"] == "rate_limit_error"


def test_a_daily_token_quota_refuses_what_would_exceed_it(admin, base):
    tenant = admin.post("/v1/admin/tenants", json={"name": "quota", "limits": {"tokens_per_day": 60}}).json()
    key = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "k"}).json()["key"]
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=30, extra_body={"ignore_eos": True})
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=30, extra_body={"ignore_eos": True})
    assert "daily quota" in refused.value.message


def test_a_key_has_its_own_limit_beside_its_tenants(admin, base):
    tenant = admin.post("/v1/admin/tenants", json={"name": "two-keys", "limits": {"requests_per_minute": 100}}).json()
    tight = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "tight", "limits": {"requests_per_minute": 1}})
    assert tight.json()["limits"] == {"requests_per_minute": 1}
    loose = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "loose"}).json()["key"]
    as_tight = openai.OpenAI(base_url=f"{base}/v1", api_key=tight.json()["key"], max_retries=0)
    as_tight.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    with pytest.raises(openai.RateLimitError) as refused:
        as_tight.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
    assert "API key" in refused.value.message
    as_loose = openai.OpenAI(base_url=f"{base}/v1", api_key=loose, max_retries=0)
    assert as_loose.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2).choices
