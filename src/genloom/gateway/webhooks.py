"""Job webhooks: signing, the check that a callback URL is safe to call, one delivery.

When a job completes or fails, Genloom POSTs the job record as JSON to its `callback_url`,
signed in the Standard Webhooks format:

    webhook-id: <id, the same on every retry of one delivery, so receivers can de-duplicate>
    webhook-timestamp: <unix seconds when this attempt was sent>
    webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>

The key is the secret's base64 payload when it starts with `whsec_`, else its UTF-8 bytes.
Receivers can verify with any Standard Webhooks library, or with the official openai client:
`openai.OpenAI(api_key="unused").webhooks.verify_signature(body, headers, secret=SECRET)`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx

from genloom.jobs.records import WebhookAttempt

USER_AGENT = "genloom-webhooks/1"

Resolver = Callable[[str, int], Awaitable[list[str]]]


class WebhookTargetRefused(ValueError):
    """The callback URL is not one Genloom will send a webhook to."""


def generate_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret=secret, webhook_id=webhook_id, timestamp=timestamp, body=body),
    }


async def resolve_host(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are an IPv4 address


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), which is where it connects."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _non_public_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and (embedded := _embedded_ipv4(address)) is not None:
        kind = _non_public_kind(embedded[1])
        return f"{embedded[0]} {kind}" if kind else None
    # Checked in this order because 127.0.0.1, 169.254.x and 0.0.0.0 also count as private.
    checks = [
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        # e.g. 100.64.0.0/10, shared address space: some clouds serve instance metadata there.
        ("non-global", not address.is_global),
    ]
    return next((kind for kind, matches in checks if matches), None)


async def check_target(
    url: str, *, allow_hosts: frozenset[str], resolve: Resolver = resolve_host, what: str = "the callback URL",
    allow_setting: str = "GENLOOM_WEBHOOK_ALLOW_HOSTS",
) -> None:
    """Refuse URLs that would make Genloom call into its own network (SSRF): webhook callbacks,
    and the base_url of a remote model registered through the API. This answers the client at
    once; `GuardedTransport` checks again when the call is made, and connects where it checked."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise WebhookTargetRefused(f"{what} must use http or https, not '{parts.scheme}': {url}")
    if "@" in parts.netloc:
        raise WebhookTargetRefused(f"{what} must not contain credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise WebhookTargetRefused(f"{what} has no host: {url}")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError as e:
        raise WebhookTargetRefused(f"{what} has an invalid port: {url}") from e
    if host not in allow_hosts:
        await public_addresses(host, port, resolve=resolve, what=what, allow_setting=allow_setting)


async def public_addresses(
    host: str, port: int, *, resolve: Resolver = resolve_host, what: str = "the callback URL",
    allow_setting: str = "GENLOOM_WEBHOOK_ALLOW_HOSTS",
) -> list[str]:
    """The addresses `host` resolves to now, all of them public, or WebhookTargetRefused."""
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(address.partition("%")[0]) for address in await resolve(host, port)]
        except OSError as e:
            raise WebhookTargetRefused(f"{what} host '{host}' does not resolve: {e}") from e
    if not addresses:
        raise WebhookTargetRefused(f"{what} host '{host}' does not resolve to any address")
    # Every address must be public: a client chooses its DNS and the connection may use any of them.
    for address in addresses:
        kind = _non_public_kind(address)
        if kind:
            raise WebhookTargetRefused(
                f"{what} host '{host}' resolves to {address}, a {kind} address; only public addresses are "
                f"allowed (an operator can allow this host with {allow_setting})"
            )
    return [str(address) for address in addresses]


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that resolves each request's host when it is sent, refuses it unless
    every address is public (or the host is allowed), and connects to the address it checked,
    the host's name still in Host and in TLS (SNI, certificate check). A name that was public
    when a URL was accepted and points inside now (DNS rebinding) is refused, not followed.
    Pooled connections are keyed by address, not name: one that calls many names wants an
    `inner` transport without keep-alive."""

    def __init__(
        self, *, allow_hosts: frozenset[str], inner: httpx.AsyncBaseTransport | None = None,
        resolve: Resolver = resolve_host, what: str = "the callback URL", allow_setting: str = "GENLOOM_WEBHOOK_ALLOW_HOSTS",
    ) -> None:
        self._allow_hosts = allow_hosts
        self._inner = inner or httpx.AsyncHTTPTransport()
        self._resolve = resolve
        self._what = what
        self._allow_setting = allow_setting

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host.lower() not in self._allow_hosts:
            port = request.url.port or (443 if request.url.scheme == "https" else 80)
            try:
                addresses = await public_addresses(
                    host, port, resolve=self._resolve, what=self._what, allow_setting=self._allow_setting
                )
            except WebhookTargetRefused as e:
                raise httpx.ConnectError(str(e), request=request) from e
            # The Host header was set from the URL when the request was built; TLS is told the name.
            request.url = request.url.copy_with(host=addresses[0])
            request.extensions = {**request.extensions, "sni_hostname": host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def deliver(
    *,
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    secret: str,
    webhook_id: str,
    attempt: int,
    timeout_s: float,
    clock: Callable[[], float] = time.time,
) -> WebhookAttempt:
    """POST one signed attempt; network trouble is recorded in the result, never raised."""
    sent_at = clock()
    headers = signed_headers(secret=secret, webhook_id=webhook_id, timestamp=int(sent_at), body=body)
    status_code: int | None = None
    error: str | None = None
    started = time.perf_counter()
    try:
        # One deadline for the whole attempt: httpx's own timeouts restart on every read.
        async with asyncio.timeout(timeout_s):
            # Streamed and never read: the receiver's response body is of no use and could be huge.
            async with client.stream(
                "POST", url, content=body, headers=headers, timeout=None, follow_redirects=False
            ) as response:
                status_code = response.status_code
    except TimeoutError:
        error = f"timed out after {timeout_s:g}s"
    except httpx.HTTPError as e:
        error = f"{type(e).__name__}: {e}"[:200].rstrip(": ")
    duration_ms = (time.perf_counter() - started) * 1000

    if status_code is not None and not 200 <= status_code < 300:
        # A redirect could point anywhere, including hosts check_target would refuse.
        redirect = " (redirects are not followed)" if 300 <= status_code < 400 else ""
        error = f"HTTP {status_code}{redirect}"
    return WebhookAttempt(
        webhook_id=webhook_id, attempt=attempt, url=url, status_code=status_code, error=error,
        duration_ms=duration_ms, delivered=error is None, at=datetime.fromtimestamp(sent_at, UTC),
    )
