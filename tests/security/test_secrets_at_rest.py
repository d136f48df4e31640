"""No secret the run used reaches a log line, an API answer (but the one that creates a key) or
anything stored on disk, beyond the one column that must hold it.

tests/e2e/test_log_secrets.py searches a `genloom serve` process's output for the keys of a
config-file run. This adds what that leaves out: a remote model registered through the admin
API with its upstream key (stored to be used: in `model_versions.api_key`, and nowhere else),
webhooks delivered signed with the webhook secret, a second admin key, revoked and near-miss
keys, and, besides the logs, every row of the database (request log, jobs, deliveries,
registry events, files, batches) and every file under the data directory."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from genloom.config import Settings
from genloom.config.settings import secret_values
from genloom.telemetry.logs import configure_logging
from tests.security.conftest import ADMIN_KEY, admin_client, receiver, secured_server
from tests.stub_upstream import Behaviour, StubMode, running_stub

UPSTREAM_KEY = "sk-upstream-api-registered-never-stored-twice-5151"
WEBHOOK_SECRET = "whsec-security-suite-never-logged-0123456789"
METRICS_TOKEN = "metrics-token-security-suite-never-logged"
HELLO = [{"role": "user", "content": "hello"}]
# The one place a secret is stored on purpose: the upstream key a registered remote model is called with.
STORED_ON_PURPOSE = {("model_versions", "api_key")}


def _database_text(path: Path) -> list[tuple[str, str, str]]:
    """(table, column, value) of every non-empty value in a SQLite file, as text."""
    found = []
    with sqlite3.connect(path) as db:
        tables = [row[0] for row in db.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            cursor = db.execute(f'select * from "{table}"')
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row):
                    if value is not None:
                        found.append((table, column, value.decode("latin-1") if isinstance(value, bytes) else str(value)))
    return found


def _wait(http: httpx.Client, job_id: str) -> dict:
    deadline = time.monotonic() + 60
    while (job := http.get(f"/v1/jobs/{job_id}").json()).get("webhook", {}).get("status") not in {"delivered", "failed"}:
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
    return job


@pytest.fixture
def production_logging(capsys) -> Iterator[Callable[[Settings], None]]:
    """Logging as `genloom serve` sets it up (one stderr handler, its Redactor, its levels), for
    a settings object; what it wrote is read with capsys. Restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    named = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in ("uvicorn", "uvicorn.error", "uvicorn.access", *logging.root.manager.loggerDict)}

    def configure(settings: Settings) -> None:
        configure_logging(level="debug", json_lines=True, secrets=secret_values(settings))

    yield configure
    root.handlers[:], root.level = saved
    for name, (handlers, propagate, level) in named.items():
        logger = logging.getLogger(name)
        logger.handlers[:], logger.propagate, logger.level = handlers, propagate, level


def test_no_secret_reaches_logs_answers_or_disk(tmp_path, tiny_model_dir, production_logging, capsys):
    answers: list[str] = []  # every API answer but the ones that show a new key once
    with receiver() as received:
        with running_stub(Behaviour(mode=StubMode.OK)) as stub, secured_server(
            tmp_path, tiny_model_dir, upstream_allow_hosts=["127.0.0.1"], webhook_allow_hosts=["127.0.0.1"],
            webhook_secret=WEBHOOK_SECRET, metrics={"token": METRICS_TOKEN}, server={"log_level": "debug"},
            jobs={"webhook_retry_base_s": 0.05, "webhook_max_attempts": 2},
        ) as (base, server), admin_client(base) as admin:
            production_logging(server.settings)
            tenant = admin.post("/v1/admin/tenants", json={"name": "secretive"}).json()
            tenant_key = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "app"}).json()["key"]
            second_admin = admin.post("/v1/admin/tenants/default/keys", json={"name": "ops", "scope": "admin"}).json()
            revoked = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "old"}).json()
            answers.append(admin.delete(f"/v1/admin/keys/{revoked['id']}").text)
            near_miss = tenant_key[:-4] + "zzzz"
            secrets = {"admin key": ADMIN_KEY, "tenant key": tenant_key, "second admin key": second_admin["key"],
                       "revoked key": revoked["key"], "near-miss key": near_miss, "upstream key": UPSTREAM_KEY,
                       "webhook secret": WEBHOOK_SECRET, "metrics token": METRICS_TOKEN}

            registered = admin.post("/v1/admin/models", json={
                "name": "vendor", "kind": "remote", "base_url": stub.base_url, "upstream_model": "big",
                "api_key": UPSTREAM_KEY, "aliases": ["production"],
            })
            assert registered.status_code == 201, registered.text
            answers.append(registered.text)
            as_tenant = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tenant_key}"}, timeout=60)
            deadline = time.monotonic() + 30
            while "vendor" not in {m["id"] for m in as_tenant.get("/v1/models").json()["data"]}:
                assert time.monotonic() < deadline
                time.sleep(0.1)

            for model in ("tiny", "vendor"):
                reply = as_tenant.post("/v1/chat/completions", json={"model": model, "messages": HELLO, "max_tokens": 2})
                assert reply.status_code == 200, reply.text
                answers.append(reply.text)
            assert stub.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # it was really used
            for mode in (StubMode.ERROR_400, StubMode.ERROR_401):  # the upstream quotes the key it was sent
                stub.behaviour.mode = mode
                refused = as_tenant.post("/v1/chat/completions", json={"model": "vendor", "messages": HELLO, "max_tokens": 2})
                assert refused.status_code >= 400
                answers.append(refused.text)

            job = as_tenant.post("/v1/jobs", json={"url": "/v1/chat/completions", "callback_url": received.url,
                                                   "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2}})
            assert job.status_code == 202, job.text
            finished = _wait(as_tenant, job.json()["id"])
            assert finished["webhook"]["status"] == "delivered" and received.headers[0]["webhook-signature"]
            answers.append(httpx.get(f"{base}/v1/jobs/{finished['id']}", headers={"Authorization": f"Bearer {tenant_key}"}).text)

            uploaded = as_tenant.post("/v1/files", files={"file": ("in.jsonl", b'{"custom_id": "a"}\n')}, data={"purpose": "batch"})
            answers.append(uploaded.text)
            answers.append(as_tenant.post("/v1/batches", json={"input_file_id": uploaded.json()["id"],
                                                               "endpoint": "/v1/chat/completions"}).text)
            for key in (near_miss, revoked["key"]):
                wrong = httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"})
                assert wrong.status_code == 401
                answers.append(wrong.text)
            answers.append(httpx.get(f"{base}/v1/models", headers={"Authorization": f"Basic {tenant_key}"}).text)
            answers.append(as_tenant.get("/v1/admin/tenants").text)  # 403
            for path in ("/v1/admin/models", "/v1/admin/models/vendor", "/v1/admin/models/vendor/history",
                         f"/v1/admin/tenants/{tenant['id']}/keys", "/v1/admin/tenants/default/keys", "/v1/admin/upstreams",
                         "/v1/admin/queue", "/v1/admin/workers"):
                shown = admin.get(path)
                assert shown.status_code == 200, (path, shown.text)
                answers.append(shown.text)
            metrics = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
            assert metrics.status_code == 200
            answers.append(metrics.text)
            as_tenant.close()

    logged = capsys.readouterr().err
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    assert len(lines) > 50 and any(line["level"] == "debug" for line in lines), "too little logged to prove anything"
    stored = []
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
            stored += [(f"{path.name}:{t}.{c}", v) for t, c, v in _database_text(path) if (t, c) not in STORED_ON_PURPOSE]
        elif path.is_file() and not path.name.endswith(("-wal", "-shm", "-journal")):
            stored.append((str(path.relative_to(tmp_path)), path.read_bytes().decode("latin-1")))
    assert any("requests" in where for where, _ in stored) and any("jobs" in where for where, _ in stored)
    for name, secret in secrets.items():
        assert secret not in logged, f"the {name} is in the log"
        assert not [a for a in answers if secret in a], f"the {name} is in an API answer"
        assert not [where for where, value in stored if secret in value], f"the {name} is stored: " + ", ".join(
            where for where, value in stored if secret in value)


def test_a_registered_remote_model_shows_that_it_has_a_key_not_the_key(tmp_path, tiny_model_dir):
    with running_stub() as stub, secured_server(tmp_path, tiny_model_dir, upstream_allow_hosts=["127.0.0.1"]) as (base, _):
        with admin_client(base) as admin:
            made = admin.post("/v1/admin/models", json={"name": "v", "kind": "remote", "base_url": stub.base_url,
                                                        "api_key": UPSTREAM_KEY})
            assert made.status_code == 201 and made.json()["has_api_key"] is True and UPSTREAM_KEY not in made.text
