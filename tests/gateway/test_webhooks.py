from __future__ import annotations

import base64
import json
import random
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest

from genloom.gateway.webhooks import (
    USER_AGENT,
    Resolver,
    WebhookTargetRefused,
    check_target,
    deliver,
    generate_secret,
    resolve_host,
    sign,
    signed_headers,
)
from genloom.queue.backoff import retry_delay
from genloom.jobs.records import WebhookAttempt
from tests.conftest import free_port

BODY = json.dumps({"id": "job_123", "object": "job", "status": "completed"}).encode()


def verify(body: bytes, headers: dict[str, str], secret: str) -> None:
    openai.OpenAI(api_key="unused").webhooks.verify_signature(body, headers, secret=secret)


SECRETS = pytest.mark.parametrize("secret", [generate_secret(), "a plain shared secret"], ids=["whsec", "plain"])


@SECRETS
def test_signed_headers_verify_with_the_openai_client(secret: str) -> None:
    headers = signed_headers(secret=secret, webhook_id="msg_1", timestamp=int(time.time()), body=BODY)
    verify(BODY, headers, secret)
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT


@SECRETS
def test_signature_fails_when_one_body_byte_changes(secret: str) -> None:
    headers = signed_headers(secret=secret, webhook_id="msg_1", timestamp=int(time.time()), body=BODY)
    altered = BODY.replace(b"completed", b"complete!")
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(altered, headers, secret)


def test_signature_depends_on_secret_id_and_timestamp() -> None:
    secret = generate_secret()
    reference = sign(secret=secret, webhook_id="msg_1", timestamp=1000, body=BODY)
    assert reference.startswith("v1,")
    assert sign(secret=generate_secret(), webhook_id="msg_1", timestamp=1000, body=BODY) != reference
    assert sign(secret=secret, webhook_id="msg_2", timestamp=1000, body=BODY) != reference
    assert sign(secret=secret, webhook_id="msg_1", timestamp=1001, body=BODY) != reference


def test_generated_secrets_are_whsec_with_32_random_bytes() -> None:
    first, second = generate_secret(), generate_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 32


def public_resolver(*addresses: str) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        return list(addresses)

    return resolve


async def unresolvable(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://10.1.2.3/hook",
        "https://192.168.0.10:8443/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://[fe80::1]/hook",
    ],
)
async def test_non_public_ip_literals_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetRefused, match="GENLOOM_WEBHOOK_ALLOW_HOSTS"):
        await check_target(url, allow_hosts=frozenset(), resolve=public_resolver("93.184.216.34"))


async def test_localhost_is_refused_after_resolving_it() -> None:
    with pytest.raises(WebhookTargetRefused, match="loopback address"):
        await check_target("http://localhost:8000/hook", allow_hosts=frozenset())


async def test_a_name_is_refused_when_any_of_its_addresses_is_private() -> None:
    resolve = public_resolver("93.184.216.34", "10.0.0.5")
    with pytest.raises(WebhookTargetRefused, match=r"10\.0\.0\.5, a private address"):
        await check_target("https://hooks.example.com/x", allow_hosts=frozenset(), resolve=resolve)


async def test_a_name_resolving_to_ipv4_mapped_loopback_is_refused() -> None:
    resolve = public_resolver("::ffff:127.0.0.1")
    with pytest.raises(WebhookTargetRefused, match="IPv4-mapped loopback"):
        await check_target("https://hooks.example.com/x", allow_hosts=frozenset(), resolve=resolve)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://hooks.example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("https://user:pass@hooks.example.com/x", "credentials"),
        ("https://token@hooks.example.com/x", "credentials"),
        ("https:///x", "no host"),
        ("https://hooks.example.com:99999/x", "invalid port"),
    ],
)
async def test_malformed_or_unsafe_urls_are_refused(url: str, reason: str) -> None:
    with pytest.raises(WebhookTargetRefused, match=reason):
        await check_target(url, allow_hosts=frozenset(), resolve=public_resolver("93.184.216.34"))


async def test_a_public_address_is_accepted() -> None:
    resolve = public_resolver("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    await check_target("https://hooks.example.com/x", allow_hosts=frozenset(), resolve=resolve)


async def test_an_allowed_host_is_accepted_without_resolving() -> None:
    allow = frozenset({"127.0.0.1", "receiver.internal", "::1"})
    await check_target("http://127.0.0.1:9000/hook", allow_hosts=allow, resolve=unresolvable)
    await check_target("http://RECEIVER.internal/hook", allow_hosts=allow, resolve=unresolvable)
    await check_target("http://[::1]/hook", allow_hosts=allow, resolve=unresolvable)


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(WebhookTargetRefused, match="does not resolve"):
        await check_target("https://no-such-host.invalid/x", allow_hosts=frozenset(), resolve=unresolvable)


async def test_resolve_host_returns_ip_strings() -> None:
    assert "127.0.0.1" in await resolve_host("localhost", 80)


def test_retry_delay_stays_within_zero_and_the_doubling_ceiling() -> None:
    rng = random.Random(0)
    for attempt in range(1, 12):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        delays = [retry_delay(attempt, base_s=0.5, max_s=30.0, rng=rng) for _ in range(300)]
        assert all(0.0 <= delay <= ceiling for delay in delays)
        # With 300 draws the largest lands near the ceiling, so the upper bound visibly doubles.
        assert max(delays) > 0.9 * ceiling


def test_retry_delay_never_exceeds_the_cap_even_for_huge_attempts() -> None:
    rng = random.Random(1)
    assert all(0.0 <= retry_delay(10_000, base_s=1.0, max_s=60.0, rng=rng) <= 60.0 for _ in range(100))


def test_retry_delay_is_deterministic_with_a_seeded_rng() -> None:
    first = [retry_delay(n, base_s=1.0, max_s=60.0, rng=random.Random(42)) for n in range(1, 8)]
    second = [retry_delay(n, base_s=1.0, max_s=60.0, rng=random.Random(42)) for n in range(1, 8)]
    assert first == second


def test_retry_delay_rejects_attempt_zero() -> None:
    with pytest.raises(ValueError, match="attempt counts from 1"):
        retry_delay(0, base_s=1.0, max_s=60.0, rng=random.Random(0))


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A local HTTP stub: /ok answers 200, /fail 500, /redirect 302 to /ok, /slow 200 after a second."""

    base_url: str
    requests: list[Received]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path == "/slow":
                time.sleep(1.0)
            status = {"/ok": 200, "/slow": 200, "/fail": 500, "/redirect": 302}[self.path]
            self.send_response(status)
            if status == 302:
                self.send_header("location", "/ok")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Receiver(base_url=f"http://127.0.0.1:{server.server_address[1]}", requests=received)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    secret: str = "a plain shared secret",
    webhook_id: str = "msg_1",
    attempt: int = 1,
    timeout_s: float = 5.0,
    clock: Callable[[], float] = time.time,
) -> WebhookAttempt:
    return await deliver(
        client=client,
        url=url,
        body=BODY,
        secret=secret,
        webhook_id=webhook_id,
        attempt=attempt,
        timeout_s=timeout_s,
        clock=clock,
    )


async def test_a_200_receiver_gets_the_exact_body_and_verifiable_headers(
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    secret = generate_secret()
    result = await post(client, f"{receiver.base_url}/ok", secret=secret, webhook_id="msg_abc")
    assert result.delivered and result.status_code == 200 and result.error is None
    assert result.webhook_id == "msg_abc" and result.attempt == 1 and result.duration_ms > 0
    [request] = receiver.requests
    assert request.body == BODY
    assert request.headers["webhook-id"] == "msg_abc"
    assert request.headers["user-agent"] == USER_AGENT
    verify(request.body, request.headers, secret)


async def test_a_500_receiver_is_recorded_as_not_delivered(receiver: Receiver, client: httpx.AsyncClient) -> None:
    result = await post(client, f"{receiver.base_url}/fail")
    assert not result.delivered
    assert result.status_code == 500 and result.error == "HTTP 500"


async def test_a_redirect_is_not_followed(receiver: Receiver, client: httpx.AsyncClient) -> None:
    result = await post(client, f"{receiver.base_url}/redirect")
    assert not result.delivered and result.status_code == 302
    assert result.error == "HTTP 302 (redirects are not followed)"
    assert [request.path for request in receiver.requests] == ["/redirect"]


async def test_a_closed_port_is_recorded_not_raised(client: httpx.AsyncClient) -> None:
    result = await post(client, f"http://127.0.0.1:{free_port()}/ok")
    assert not result.delivered and result.status_code is None
    assert result.error is not None and result.error.startswith("ConnectError")


async def test_a_slow_receiver_times_out_without_raising(receiver: Receiver, client: httpx.AsyncClient) -> None:
    result = await post(client, f"{receiver.base_url}/slow", timeout_s=0.2)
    assert not result.delivered and result.status_code is None
    assert result.error == "timed out after 0.2s"
    assert result.duration_ms < 900


async def test_retries_keep_the_webhook_id_and_sign_a_fresh_timestamp(
    receiver: Receiver, client: httpx.AsyncClient
) -> None:
    secret = generate_secret()
    now = time.time()
    url = f"{receiver.base_url}/ok"
    first = await post(client, url, secret=secret, webhook_id="msg_same", attempt=1, clock=lambda: now - 60)
    second = await post(client, url, secret=secret, webhook_id="msg_same", attempt=2, clock=lambda: now)
    assert (first.webhook_id, first.attempt, second.webhook_id, second.attempt) == ("msg_same", 1, "msg_same", 2)
    assert [request.headers["webhook-id"] for request in receiver.requests] == ["msg_same", "msg_same"]
    timestamps = [int(request.headers["webhook-timestamp"]) for request in receiver.requests]
    assert timestamps == [int(now - 60), int(now)]
    for request in receiver.requests:
        verify(request.body, request.headers, secret)
