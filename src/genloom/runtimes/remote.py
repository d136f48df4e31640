"""A remote OpenAI-compatible text upstream (a vLLM server, TGI, Ollama, a vendor's API).

Every failure is raised as an `UpstreamError` subclass named for what went wrong, so a fallback
policy can decide from the error alone: `retryable` says the same upstream may answer if asked
again, `request_at_fault` says no upstream will (the request itself is bad). A stream that fails
before its first chunk raises the same classes with `before_first_token=True`; one that fails
after chunks were yielded raises `StreamBroken`. No message ever carries the upstream's API key.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

_MAX_ERROR_BODY_BYTES = 64 * 1024
_MAX_QUOTED_CHARS = 300


@dataclass(frozen=True, kw_only=True)
class UpstreamSettings:
    name: str
    base_url: str  # up to and including the API version, e.g. "http://vllm:8000/v1"
    api_key: str | None = field(repr=False)
    model: str  # the upstream's own name for the model, sent in place of the client's
    connect_timeout_s: float = 5
    read_timeout_s: float = 60  # longest silence allowed between bytes of a response
    first_token_timeout_s: float = 30  # from sending a streamed request to its first chunk

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("an upstream needs a name")
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"upstream {self.name!r}: base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise ValueError(f"upstream {self.name!r}: model must name the upstream's model")
        for key in ("connect_timeout_s", "read_timeout_s", "first_token_timeout_s"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"upstream {self.name!r}: {key} must be > 0, got {value}")


class UpstreamError(Exception):
    """A call to an upstream failed; `detail` says how, in the upstream's words where it gave any."""

    retryable: ClassVar[bool] = False  # the same upstream may answer the same request if asked again
    request_at_fault: ClassVar[bool] = False  # the request is bad, so no upstream will answer it

    def __init__(self, upstream: str, detail: str, *, before_first_token: bool = True) -> None:
        super().__init__(f"upstream {upstream!r}: {detail}")
        self.upstream = upstream
        self.detail = detail
        self.before_first_token = before_first_token  # nothing reached the caller before it failed


class UpstreamTimeout(UpstreamError):
    retryable = True


class UpstreamUnavailable(UpstreamError):
    """The connection was refused, reset or closed before a whole answer came back."""

    retryable = True


class UpstreamRateLimited(UpstreamError):
    retryable = True

    def __init__(self, upstream: str, detail: str, *, retry_after_s: float | None) -> None:
        super().__init__(upstream, detail)
        self.retry_after_s = retry_after_s


class UpstreamServerError(UpstreamError):
    retryable = True

    def __init__(self, upstream: str, detail: str, *, status_code: int | None) -> None:
        super().__init__(upstream, detail)
        self.status_code = status_code  # None when the upstream reported the error inside a stream


class UpstreamMisconfigured(UpstreamError):
    """Genloom's settings for this upstream are wrong (API key, model name, URL): another upstream
    may still answer, but this one will not until an operator fixes them."""

    def __init__(self, upstream: str, detail: str, *, status_code: int | None) -> None:
        super().__init__(upstream, detail)
        self.status_code = status_code


class UpstreamRejected(UpstreamError):
    """The upstream found the request itself invalid. `error` is its OpenAI-shaped error object
    (message, type, param, code), fit to pass on to the client."""

    request_at_fault = True

    def __init__(self, upstream: str, *, status_code: int, error: dict[str, Any]) -> None:
        super().__init__(upstream, f"rejected the request (HTTP {status_code}): {error['message']}")
        self.status_code = status_code
        self.error = error


class UpstreamProtocolError(UpstreamError):
    """The upstream answered with something that is not OpenAI-compatible JSON or SSE."""


class StreamBroken(UpstreamError):
    """A stream failed after chunks had been yielded; `reason` is the failure, classified."""

    def __init__(self, upstream: str, *, chunks_received: int, reason: UpstreamError) -> None:
        super().__init__(
            upstream, f"the stream broke after {chunks_received} chunk(s): {reason.detail}", before_first_token=False
        )
        self.chunks_received = chunks_received
        self.reason = reason


class RemoteTextUpstream:
    """Calls one upstream's OpenAI-style endpoints; `client` is shared and closed by its owner."""

    def __init__(self, *, settings: UpstreamSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self._client = client
        self._timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.connect_timeout_s,
        )

    @property
    def name(self) -> str:
        return self.settings.name

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST `body` to base_url + `path` (e.g. "/chat/completions") and return the JSON answer."""
        if body.get("stream"):
            raise ValueError("the body asks for a stream; call stream() instead")
        request = self._request(path, {**body, "model": self.settings.model}, accept="application/json")
        try:
            response = await self._client.send(request, follow_redirects=False)
        except httpx.HTTPError as e:
            raise self._transport_error(e) from e
        if not response.is_success:
            raise self._status_error(response, response.content)
        return self._json_object(response.content, what="a response body")

    async def stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST `body` with `stream: true` and yield each SSE `data:` chunk, parsed, until [DONE]."""
        body = {**body, "model": self.settings.model, "stream": True}
        request = self._request(path, body, accept="text/event-stream")
        response: httpx.Response | None = None
        chunks: AsyncGenerator[dict[str, Any], None] | None = None
        received = 0
        try:
            try:
                # The deadline is armed only until the first chunk, so it never fires while the caller holds a chunk.
                async with asyncio.timeout(self.settings.first_token_timeout_s):
                    response = await self._client.send(request, stream=True, follow_redirects=False)
                    if not response.is_success:
                        raise self._status_error(response, await _read_capped(response))
                    content_type = response.headers.get("content-type") or "no content-type"
                    if not content_type.startswith("text/event-stream"):
                        raise UpstreamProtocolError(self.name, f"answered a stream request with {content_type!r}")
                    chunks = self._chunks(response)
                    first = await anext(chunks, None)
            except TimeoutError as e:
                deadline = self.settings.first_token_timeout_s
                raise UpstreamTimeout(self.name, f"no first token within {deadline:g} s") from e
            except httpx.HTTPError as e:
                raise self._transport_error(e) from e
            if first is None:
                return
            yield first
            received = 1
            try:
                async for chunk in chunks:
                    yield chunk
                    received += 1
            except httpx.HTTPError as e:
                raise StreamBroken(self.name, chunks_received=received, reason=self._transport_error(e)) from e
            except UpstreamError as e:
                raise StreamBroken(self.name, chunks_received=received, reason=e) from e
        finally:
            if chunks is not None:
                await chunks.aclose()
            if response is not None:
                await response.aclose()

    def _request(self, path: str, body: dict[str, Any], *, accept: str) -> httpx.Request:
        headers = {"accept": accept}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        url = self.settings.base_url.rstrip("/") + "/" + path.lstrip("/")
        return self._client.build_request("POST", url, json=body, headers=headers, timeout=self._timeout)

    async def _chunks(self, response: httpx.Response) -> AsyncGenerator[dict[str, Any], None]:
        data: list[str] = []
        lines = response.aiter_lines()
        async for line in lines:
            if line:
                name, _, value = line.partition(":")
                if name == "data":
                    data.append(value.removeprefix(" "))
                continue  # comments (keep-alives) and event/id/retry fields carry nothing we use
            if not data:
                continue
            event, data = "\n".join(data), []
            if event == "[DONE]":
                async for _ in lines:  # read to the end, so the connection goes back to the pool
                    pass
                return
            yield self._stream_chunk(event)
        if data == ["[DONE]"]:
            return
        raise UpstreamProtocolError(self.name, "ended its stream without [DONE]")

    def _stream_chunk(self, event: str) -> dict[str, Any]:
        chunk = self._json_object(event.encode(), what="a stream event")
        if "error" in chunk and "choices" not in chunk:
            raise UpstreamServerError(
                self.name, f"reported an error in its stream: {self._upstream_message(chunk)}", status_code=None
            )
        return chunk

    def _json_object(self, content: bytes, *, what: str) -> dict[str, Any]:
        try:
            value = json.loads(content)
        except ValueError as e:
            raise UpstreamProtocolError(self.name, f"sent {what} that is not JSON") from e
        if not isinstance(value, dict):
            raise UpstreamProtocolError(self.name, f"sent {what} that is not a JSON object")
        return value

    def _transport_error(self, e: httpx.HTTPError) -> UpstreamError:
        s = self.settings
        if isinstance(e, httpx.ConnectTimeout | httpx.PoolTimeout):
            return UpstreamTimeout(self.name, f"no connection within {s.connect_timeout_s:g} s")
        if isinstance(e, httpx.WriteTimeout):
            return UpstreamTimeout(self.name, f"could not send the request within {s.read_timeout_s:g} s")
        if isinstance(e, httpx.TimeoutException):
            return UpstreamTimeout(self.name, f"sent nothing for {s.read_timeout_s:g} s")
        if isinstance(e, httpx.UnsupportedProtocol):
            detail = f"its base_url cannot be used: {self._scrub(str(e))}"
            return UpstreamMisconfigured(self.name, detail, status_code=None)
        if isinstance(e, httpx.DecodingError):
            return UpstreamProtocolError(self.name, f"sent a body that cannot be decoded: {self._scrub(str(e))}")
        if isinstance(e, httpx.ConnectError):
            return UpstreamUnavailable(self.name, f"could not connect: {self._scrub(str(e)) or type(e).__name__}")
        return UpstreamUnavailable(self.name, f"the connection failed: {self._scrub(str(e)) or type(e).__name__}")

    def _status_error(self, response: httpx.Response, content: bytes) -> UpstreamError:
        status = response.status_code
        parsed = _parse_json(content)
        message = self._upstream_message(parsed) if parsed is not None else None
        said = f": {message}" if message else ""
        if status == 429:
            retry_after_s = _retry_after_s(response.headers.get("retry-after"))
            wait = f"; it asks to wait {retry_after_s:g} s" if retry_after_s is not None else ""
            detail = f"is rate limiting Genloom (HTTP 429){wait}{said}"
            return UpstreamRateLimited(self.name, detail, retry_after_s=retry_after_s)
        if status == 408:
            return UpstreamTimeout(self.name, f"timed out reading the request (HTTP 408){said}")
        if status in (401, 403):
            return UpstreamMisconfigured(
                self.name, f"refused Genloom's credentials (HTTP {status}); check its api_key{said}", status_code=status
            )
        if status == 404:
            detail = f"has no such model or endpoint (HTTP 404); check its model and base_url{said}"
            return UpstreamMisconfigured(self.name, detail, status_code=status)
        if 300 <= status < 400:
            detail = f"redirected the request (HTTP {status}); set base_url to where it points"
            return UpstreamMisconfigured(self.name, detail, status_code=status)
        if 400 <= status < 500:
            return UpstreamRejected(self.name, status_code=status, error=self._openai_error(parsed, status, message))
        if 500 <= status < 600:
            return UpstreamServerError(self.name, f"failed (HTTP {status}){said}", status_code=status)
        return UpstreamProtocolError(self.name, f"answered with unexpected HTTP status {status}")

    def _openai_error(self, parsed: Any, status: int, message: str | None) -> dict[str, Any]:
        """The upstream's error object in OpenAI's shape, whichever of the common shapes it used."""
        error = parsed.get("error") if isinstance(parsed, dict) else None
        source = error if isinstance(error, dict) else parsed if isinstance(parsed, dict) else {}
        kind, param, code = source.get("type"), source.get("param"), source.get("code")
        return {
            "message": message or f"the upstream answered HTTP {status}",
            "type": self._scrub(kind) if isinstance(kind, str) else "invalid_request_error",
            "param": self._scrub(param) if isinstance(param, str) else None,
            "code": self._scrub(code) if isinstance(code, str) else code if isinstance(code, int) else None,
        }

    def _upstream_message(self, parsed: Any) -> str | None:
        """The human message in an error body: OpenAI's {"error": {"message"}}, vLLM's {"message"}
        or TGI's {"error": "..."}; scrubbed of the API key and cut short."""
        if not isinstance(parsed, dict):
            return None
        error = parsed.get("error")
        if isinstance(error, dict):
            error = error.get("message")
        text = error if isinstance(error, str) else parsed.get("message")
        if not isinstance(text, str) or not text:
            return None
        text = self._scrub(text)
        return text if len(text) <= _MAX_QUOTED_CHARS else text[:_MAX_QUOTED_CHARS] + "..."

    def _scrub(self, text: str) -> str:
        key = self.settings.api_key
        return text.replace(key, "***") if key else text


async def _read_capped(response: httpx.Response) -> bytes:
    """An error body, read no further than needed: it is only quoted, and a proxy's could be huge."""
    body = b""
    async for part in response.aiter_bytes():
        body += part
        if len(body) >= _MAX_ERROR_BODY_BYTES:
            break
    return body[:_MAX_ERROR_BODY_BYTES]


def _parse_json(content: bytes) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds from now: either delay-seconds or an HTTP date; None if absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None
