"""Job webhooks end to end: a real server POSTs signed job records to a local receiver."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from genloom.gateway.webhooks import generate_secret
from tests.api.conftest import running_server

SECRET = generate_secret()
HELLO = [{"role": "user", "content": "hello"}]


class Receiver:
    """Answers 500 to the first `fail_first` deliveries of each webhook id, then 200."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.received: list[tuple[dict[str, str], bytes, int]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                earlier = sum(1 for h, _, _ in receiver.received if h["webhook-id"] == headers["webhook-id"])
                status = 500 if earlier < receiver.fail_first else 200
                receiver.received.append((headers, body, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def webhook_server(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    jobs = {"webhook_retry_base_s": 0.05, "webhook_retry_max_s": 0.2, "webhook_max_attempts": 3}
    with running_server(
        tmp_path_factory.mktemp("webhooks"), tiny_model_dir, jobs=jobs, webhook_secret=SECRET,
        webhook_allow_hosts=["127.0.0.1"],
    ) as (base, _):
        yield base


def finished_job(http: httpx.Client, job_id: str, timeout_s: float = 20) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job.get("webhook", {}).get("status") in {"delivered", "failed"}:
            return job
        assert time.monotonic() < deadline, f"webhook still {job.get('webhook')}"
        time.sleep(0.05)


def test_webhook_is_signed_retried_after_a_failure_and_every_attempt_recorded(webhook_server):
    http = httpx.Client(base_url=webhook_server, timeout=30)
    with Receiver(fail_first=1) as receiver:
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 4}
        created = http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body, "callback_url": receiver.url})
        assert created.status_code == 202
        job = finished_job(http, created.json()["id"])
    assert job["status"] == "completed" and job["webhook"]["status"] == "delivered"
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in job["webhook"]["deliveries"]] == [
        (1, 500, False), (2, 200, True)
    ]
    verifier = openai.OpenAI(api_key="unused")
    (h1, b1, _), (h2, b2, _) = receiver.received
    for headers, payload in ((h1, b1), (h2, b2)):
        verifier.webhooks.verify_signature(payload, headers, secret=SECRET)  # raises if it does not verify
    assert h1["webhook-id"] == h2["webhook-id"]  # receivers can de-duplicate retries
    event = json.loads(b2)
    assert event["type"] == "job.completed" and event["data"]["id"] == job["id"]
    assert event["data"]["result"]["choices"][0]["message"]["role"] == "assistant"
    tampered = b2.replace(b"completed", b"cancelled", 1)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verifier.webhooks.verify_signature(tampered, h2, secret=SECRET)


def test_a_receiver_that_keeps_failing_ends_with_a_failed_webhook(webhook_server):
    http = httpx.Client(base_url=webhook_server, timeout=30)
    with Receiver(fail_first=10) as receiver:
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 2}
        created = http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body, "callback_url": receiver.url})
        job = finished_job(http, created.json()["id"])
    assert job["webhook"]["status"] == "failed" and len(job["webhook"]["deliveries"]) == 3
    assert all(d["error"] == "HTTP 500" for d in job["webhook"]["deliveries"])


@pytest.mark.parametrize(
    "url",
    ["http://localhost:9/hook", "http://10.1.2.3/hook", "http://169.254.169.254/latest", "http://[::1]:9/x", "ftp://127.0.0.1/x"],
)
def test_private_or_odd_webhook_targets_are_refused_unless_allowed(webhook_server, url):
    http = httpx.Client(base_url=webhook_server, timeout=30)
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 2}
    answer = http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body, "callback_url": url})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "callback_url"
