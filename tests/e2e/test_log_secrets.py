"""No secret reaches a log: a real server with JSON logs at DEBUG, driven through the paths that
handle keys (admin API, tenant keys, a wrong key, a remote upstream that quotes its key back in
an error, webhooks, a metrics token); then the whole of its output is searched for every secret
the run used."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
import yaml

from tests.e2e.test_scale_out import ADMIN_KEY, HELLO, admin_client, process
from tests.stub_upstream import Behaviour, StubMode, running_stub

UPSTREAM_KEY = "sk-upstream-key-never-logged-4242"
WEBHOOK_SECRET = "whsec-never-logged-0123456789abcdef"
METRICS_TOKEN = "metrics-token-never-logged-9876"
WRONG_KEY = "gl-wrong-key-never-logged-abcdefghijklmnop"


def test_a_whole_server_run_logs_no_secret(tmp_path, tiny_model_dir):
    with running_stub(Behaviour(mode=StubMode.ERROR_400)) as stub:
        config = {
            "builtin_models": False,
            "models": [
                {"name": "tiny", "path": str(tiny_model_dir)},
                {"name": "remote", "kind": "remote", "base_url": stub.base_url, "api_key": UPSTREAM_KEY},
            ],
            "metrics": {"token": METRICS_TOKEN},
            "server": {"log_level": "debug"},
            "logging": {"format": "json"},
        }
        (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
        env = {"GENLOOM_DATA_DIR": str(tmp_path / "data"), "GENLOOM_ADMIN_KEY": ADMIN_KEY, "GENLOOM_WEBHOOK_SECRET": WEBHOOK_SECRET}
        with process(tmp_path, "serve", ["serve", "--config", str(tmp_path / "genloom.yaml")], env) as (base, _):
            admin = admin_client(base)
            made = admin.post("/v1/admin/tenants", json={"name": "acme"})
            assert made.status_code == 201, made.text
            created = admin.post(f"/v1/admin/tenants/{made.json()['id']}/keys", json={"name": "app"})
            assert created.status_code == 201, created.text
            tenant_key = created.json()["key"]
            tenant = openai.OpenAI(base_url=f"{base}/v1", api_key=tenant_key, max_retries=0)
            assert tenant.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4).choices
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=f"{base}/v1", api_key=WRONG_KEY, max_retries=0).models.list()
            with pytest.raises(openai.BadRequestError):  # the upstream's error quotes the key it was sent
                tenant.chat.completions.create(model="remote", messages=HELLO, max_tokens=4)
            job = admin.post("/v1/jobs", json={
                "url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2},
                "callback_url": "http://127.0.0.1:9/hook",  # refused: loopback is not allowed
            })
            assert job.status_code == 400
            assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
            assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {WRONG_KEY}"}).status_code == 401
        output = (tmp_path / "serve.log").read_text()
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert len(lines) > 20 and all(json.loads(line)["level"] for line in lines)  # it logged, as JSON
    assert any(json.loads(line).get("tenant", "").startswith("ten") for line in lines), "no line names the tenant"
    for secret in (ADMIN_KEY, tenant_key, UPSTREAM_KEY, WEBHOOK_SECRET, METRICS_TOKEN, WRONG_KEY):
        assert secret not in output, f"a secret is in the log: {secret[:6]}…"
