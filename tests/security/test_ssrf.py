"""SSRF: every URL the server itself calls (job webhooks' callback_url, the base_url of a remote
model registered through the API) is refused with a clear 400 when it names a private,
loopback, link-local, unspecified or otherwise non-public address, in any spelling, unless the
operator allowed that host; and a name is checked again when the call is made, then called at
the address that was checked (DNS rebinding)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from genloom.gateway.webhooks import GuardedTransport, WebhookTargetRefused, check_target
from tests.api.test_job_webhooks import finished_job
from tests.security.conftest import admin_client, new_tenant, receiver, secured_server

PUBLIC = "93.184.216.34"
HELLO = [{"role": "user", "content": "hello"}]

# (host as written in a URL, what it is): every one resolves (or is) a non-public address.
NON_PUBLIC = [
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.0.10", "private"),
    ("169.254.169.254", "link-local"),  # cloud instance metadata
    ("100.100.100.200", "non-global"),  # shared address space; one cloud's metadata service
    ("127.0.0.1", "loopback"),
    ("localhost", "loopback"),  # a name: refused after resolving it (/etc/hosts)
    ("127.1", "loopback"),
    ("0x7f000001", "loopback"),
    ("2130706433", "loopback"),
    ("017700000001", "loopback"),
    ("0177.0.0.1", "loopback"),
    ("[::1]", "loopback"),
    ("[::ffff:127.0.0.1]", "IPv4-mapped loopback"),
    ("[::ffff:7f00:1]", "IPv4-mapped loopback"),
    ("[::ffff:169.254.169.254]", "IPv4-mapped link-local"),
    ("[64:ff9b::a9fe:a9fe]", "NAT64 link-local"),
    ("[2002:a9fe:a9fe::1]", "6to4 link-local"),
    ("0.0.0.0", "unspecified"),
    ("0", "unspecified"),
    ("[::]", "unspecified"),
    ("[fd12:3456::1]", "private"),
    ("[fe80::1]", "link-local"),
]


@pytest.mark.parametrize(("host", "kind"), NON_PUBLIC)
async def test_a_non_public_address_in_any_spelling_is_refused(host, kind):
    with pytest.raises(WebhookTargetRefused, match=f"a {kind} address"):
        await check_target(f"http://{host}:8080/hook", allow_hosts=frozenset())


async def test_a_name_is_resolved_and_every_address_checked():
    async def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC, "192.168.1.7"] if host == "split.example" else [PUBLIC]

    await check_target("https://public.example/hook", allow_hosts=frozenset(), resolve=resolve)
    with pytest.raises(WebhookTargetRefused, match=r"192\.168\.1\.7, a private address"):
        await check_target("https://split.example/hook", allow_hosts=frozenset(), resolve=resolve)


async def test_the_allow_list_admits_the_host_as_written_only():
    allow = frozenset({"127.0.0.1"})
    await check_target("http://127.0.0.1:9000/hook", allow_hosts=allow)
    for other in ("localhost", "127.1", "[::1]", "[::ffff:127.0.0.1]"):
        with pytest.raises(WebhookTargetRefused):
            await check_target(f"http://{other}:9000/hook", allow_hosts=allow)


def _recording() -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    return seen, httpx.MockTransport(answer)


async def test_the_guarded_transport_connects_to_the_address_it_checked():
    seen, inner = _recording()

    async def resolve(host: str, port: int) -> list[str]:
        return [PUBLIC]

    transport = GuardedTransport(allow_hosts=frozenset(), inner=inner, resolve=resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.post("https://hooks.example/hook?x=1", content=b"{}")).status_code == 200
    [sent] = seen
    assert sent.url.host == PUBLIC and sent.url.path == "/hook" and sent.url.query == b"x=1"
    assert sent.headers["host"] == "hooks.example"  # the name goes in Host and TLS (SNI, certificate)
    assert sent.extensions["sni_hostname"] == "hooks.example"


async def test_the_guarded_transport_refuses_a_name_that_rebinds_to_a_private_address():
    seen, inner = _recording()
    answers = iter([[PUBLIC], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)

    url = "http://rebind.example/hook"
    await check_target(url, allow_hosts=frozenset(), resolve=rebinding)  # public when the URL was accepted
    transport = GuardedTransport(allow_hosts=frozenset(), inner=inner, resolve=rebinding)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="127.0.0.1, a loopback address"):
            await client.post(url, content=b"{}")
    assert seen == []


async def test_the_guarded_transport_passes_an_allowed_host_by_name():
    seen, inner = _recording()

    async def unresolvable(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "not known")

    transport = GuardedTransport(allow_hosts=frozenset({"receiver.internal"}), inner=inner, resolve=unresolvable)
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post("http://receiver.internal:8080/hook")
    assert seen[0].url.host == "receiver.internal"


class FakeDns:
    """Stands in for DNS: `name` resolves to a public address for its first `public_answers`
    lookups, then to 127.0.0.1 (a rebinding attacker's name); every other host resolves as usual."""

    def __init__(self, name: str, public_answers: int) -> None:
        self.name = name
        self.public_answers = public_answers
        self.lookups = 0
        self._real = socket.getaddrinfo

    def __call__(self, host, port, *args, **kwargs):
        if (host.decode() if isinstance(host, bytes) else host) != self.name:  # anyio passes bytes
            return self._real(host, port, *args, **kwargs)
        self.lookups += 1
        address = PUBLIC if self.lookups <= self.public_answers else "127.0.0.1"
        return self._real(address, port, *args, **kwargs)


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    jobs = {"webhook_retry_base_s": 0.05, "webhook_retry_max_s": 0.1, "webhook_max_attempts": 1}
    with secured_server(tmp_path_factory.mktemp("ssrf"), tiny_model_dir, jobs=jobs, webhook_secret="whsec-ssrf-suite",
                        webhook_allow_hosts=["hooks.allowed.internal"]) as (base, _):
        yield base


@pytest.fixture(scope="module")
def tenant(served):
    return new_tenant(served, "ssrf")


def _job(callback_url: str) -> dict:
    return {"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 2},
            "callback_url": callback_url}


def test_a_job_webhook_to_a_non_public_address_is_refused_with_400(served, tenant):
    with httpx.Client(base_url=served, headers=tenant.headers, timeout=30) as http:
        for host, kind in NON_PUBLIC:
            answer = http.post("/v1/jobs", json=_job(f"http://{host}:9/hook"))
            assert answer.status_code == 400, (host, answer.text)
            error = answer.json()["error"]
            assert error["param"] == "callback_url" and f"a {kind} address" in error["message"], (host, error)
            assert "GENLOOM_WEBHOOK_ALLOW_HOSTS" in error["message"]


def test_a_remote_model_on_a_non_public_address_is_refused_with_400(served):
    with admin_client(served) as admin:
        for host, kind in NON_PUBLIC:
            answer = admin.post("/v1/admin/models", json={"name": "evil", "kind": "remote", "base_url": f"http://{host}/v1"})
            assert answer.status_code == 400, (host, answer.text)
            error = answer.json()["error"]
            assert error["param"] == "base_url" and f"a {kind} address" in error["message"], (host, error)
            assert "GENLOOM_UPSTREAM_ALLOW_HOSTS" in error["message"]
        assert "evil" not in {m["id"] for m in admin.get("/v1/admin/models").json()["data"]}


def test_an_allowed_webhook_host_is_accepted(served, tenant):
    with httpx.Client(base_url=served, headers=tenant.headers, timeout=30) as http:
        assert http.post("/v1/jobs", json=_job("http://hooks.allowed.internal:9/hook")).status_code == 202


def test_a_webhook_name_that_rebinds_to_loopback_after_the_checks_is_not_called(served, tenant, monkeypatch):
    # Public for the check at submission and the dispatcher's check before sending; loopback when
    # the connection is made. Connecting by name would reach the receiver; the guard does not.
    dns = FakeDns("rebind.attacker.example", public_answers=2)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    with receiver() as got, httpx.Client(base_url=served, headers=tenant.headers, timeout=30) as http:
        job = http.post("/v1/jobs", json=_job(f"http://rebind.attacker.example:{got.port}/hook"))
        assert job.status_code == 202, job.text
        finished = finished_job(http, job.json()["id"], timeout_s=60)
    assert got.paths == [], "the webhook reached a loopback receiver through a rebinding name"
    assert dns.lookups >= 3
    [attempt] = finished["webhook"]["deliveries"]
    assert not attempt["delivered"] and "127.0.0.1, a loopback address" in attempt["error"]


def test_a_remote_model_whose_name_rebinds_to_loopback_is_not_called(served, tenant, monkeypatch):
    # Public when it is registered; loopback when its worker calls it.
    dns = FakeDns("upstream.attacker.example", public_answers=1)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    with receiver() as got, admin_client(served) as admin:
        registered = admin.post("/v1/admin/models", json={
            "name": "rebound", "kind": "remote", "base_url": f"http://upstream.attacker.example:{got.port}/v1",
            "upstream_model": "x", "api_key": "sk-upstream-secret-for-ssrf-test", "aliases": ["production"],
        })
        assert registered.status_code == 201, registered.text
        deadline = time.monotonic() + 30
        while "rebound" not in {m["id"] for m in httpx.get(f"{served}/v1/models", headers=tenant.headers).json()["data"]}:
            assert time.monotonic() < deadline, "the remote model was not loaded"
            time.sleep(0.1)
        answer = httpx.post(f"{served}/v1/chat/completions", headers=tenant.headers, timeout=60,
                            json={"model": "rebound", "messages": HELLO, "max_tokens": 2})
    assert got.paths == [], "the upstream call reached a loopback receiver through a rebinding name"
    assert answer.status_code >= 500 and "127.0.0.1, a loopback address" in answer.json()["error"]["message"], answer.text
    assert "sk-upstream-secret" not in answer.text
