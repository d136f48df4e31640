"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks streaming)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from genloom.api.errors import error_body
from genloom.gateway.json_depth import JsonNesting, JsonTooDeep
from genloom.telemetry.logs import close_request, open_request
from genloom.telemetry.tracing import TRACE_ID_HEADER, Tracing, current, fail, trace_id_of

_PROPAGATED = frozenset({b"traceparent", b"tracestate"})  # what W3C trace context reads of a request
_UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapes: many, and all alike
_ACCESS = logging.getLogger("genloom.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class RequestIdMiddleware:
    """Every response carries x-request-id: the caller's when it sent a sane one, else a new one."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        token = open_request(request_id=request_id)  # every log line while serving it names it
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            close_request(token)


class AccessLogMiddleware:
    """One log line per HTTP request when it ends (streams included): method, path, status and
    duration, at INFO on `genloom.access` (probes and scrapes at DEBUG)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = 500  # what the client gets when the app fails before answering

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            path, method = scope.get("path", ""), scope.get("method", "")
            duration_ms = round(1000 * (time.monotonic() - started), 1)
            _ACCESS.log(
                logging.DEBUG if path in _UNTRACED else logging.INFO, "%s %s %d %.1f ms", method, path, status, duration_ms,
                extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms},
            )


class BodyLimitMiddleware:
    """Refuse bodies over the limit with 413, by Content-Length or by counting what arrives."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, uploads: dict[str, int] | None = None) -> None:
        """`uploads`: paths whose bodies may be larger (file uploads), with their own limit."""
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.uploads = uploads or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.uploads.get(scope.get("path", ""), self.max_body_bytes)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await self._reject(send, limit)
            return
        received = 0
        too_large = False

        async def counting_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # End the body here; whatever the app answers is replaced by the 413 below.
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_large:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if too_large:
            await self._reject(send, limit)

    async def _reject(self, send: Send, limit: int) -> None:
        body = json.dumps(
            error_body(
                f"the request body is larger than {limit} bytes",
                "invalid_request_error",
                None,
                "request_too_large",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


class JsonDepthMiddleware:
    """Refuse a JSON body nested deeper than `max_depth` with 400, measured as it arrives, before
    anything parses it (bodies of other media types, such as file uploads, pass untouched)."""

    def __init__(self, app: ASGIApp, *, max_depth: int) -> None:
        self.app = app
        self.max_depth = max_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _json_body(scope):
            await self.app(scope, receive, send)
            return
        nesting = JsonNesting()
        too_deep = False

        async def measuring_receive() -> Message:
            nonlocal too_deep
            message = await receive()
            if message["type"] == "http.request" and nesting.feed(message.get("body", b"")) > self.max_depth:
                # End the body here; whatever the app answers is replaced by the 400 below.
                too_deep = True
                return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Message) -> None:
            if not too_deep:
                await send(message)

        await self.app(scope, measuring_receive, guarded_send)
        if too_deep:
            body = json.dumps(error_body(str(JsonTooDeep(self.max_depth)), "invalid_request_error", None, "json_too_deep"))
            await send({
                "type": "http.response.start", "status": 400,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            })
            await send({"type": "http.response.body", "body": body.encode()})


def _json_body(scope: Scope) -> bool:
    """Whether FastAPI would parse the body as JSON: no content-type, or a JSON one."""
    content_type = dict(scope["headers"]).get(b"content-type")
    if content_type is None:
        return True
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class TracingMiddleware:
    """One server span per HTTP request, the caller's W3C `traceparent` its parent, current while
    the request runs (streamed bodies included) so every span below joins it; the answer names
    the trace in x-genloom-trace-id. Installed only when tracing is on."""

    def __init__(self, app: ASGIApp, *, tracing: Tracing) -> None:
        self.app = app
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in _UNTRACED:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in _PROPAGATED}
        method = scope.get("method", "GET")
        span = self.tracing.server_span(method, headers, {})
        if span is not None and span.is_recording():  # attributes only for spans that are kept
            user_agent = dict(scope["headers"]).get(b"user-agent")
            span.set_attributes({
                "http.request.method": method, "url.path": scope.get("path", ""), "url.scheme": scope.get("scheme", "http"),
                "user_agent.original": user_agent.decode("latin-1") if user_agent else "",
                "genloom.request.id": scope.get("state", {}).get("request_id") or "",
            })
        trace_id = (trace_id_of(span) or "").encode()

        async def send_with_trace(message: Message) -> None:
            if message["type"] == "http.response.start" and span is not None:
                if span.is_recording():
                    span.set_attribute("http.response.status_code", message["status"])
                if message["status"] >= 500:
                    fail(span, f"HTTP {message['status']}")
                if trace_id:
                    message["headers"] = [*message.get("headers", []), (TRACE_ID_HEADER.encode(), trace_id)]
            await send(message)

        try:
            with current(span):
                await self.app(scope, receive, send_with_trace)
        except BaseException as e:
            fail(span, e)
            raise
        finally:
            if span is not None:
                route = scope.get("route")
                template = getattr(route, "path", None)
                if template:
                    span.set_attribute("http.route", template)
                    span.update_name(f"{method} {template}")
                span.end()
