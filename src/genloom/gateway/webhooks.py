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


def _non_public_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is not a public one, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        kind = _non_public_kind(address.ipv4_mapped)
        return f"IPv4-mapped {kind}" if kind else None
    # Checked in this order because 127.0.0.1, 169.254.x and 0.0.0.0 also count as private.
    checks = [
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
    ]
    return next((kind for kind, matches in checks if matches), None)


async def check_target(
    url: str, *, allow_hosts: frozenset[str], resolve: Resolver = resolve_host, what: str = "the callback URL",
    allow_setting: str = "GENLOOM_WEBHOOK_ALLOW_HOSTS",
) -> None:
    """Refuse URLs that would make Genloom call into its own network (SSRF): webhook callbacks,
    and the base_url of a remote model registered through the API."""
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
    if host in allow_hosts:
        return

    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(address) for address in await resolve(host, port)]
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
