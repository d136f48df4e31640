"""How uvicorn serves Genloom: its config, and the bounds its httptools protocol lacks.

uvicorn's httptools protocol reads a request head of any size (20 MB of one header is read in
full) and waits forever for a client that connects and sends nothing, or a header a minute
(slowloris). `bounded_protocol` adds three bounds to it, per request on a connection:

- the head (request line and headers) may hold at most `max_header_bytes`: beyond, 431;
- the head must be complete within `header_timeout_s` of its first byte (or of the
  connection, for the first request): else 408 and the connection is closed;
- a body that stops arriving for `body_timeout_s` (while the app is ready to read it) ends the
  connection: 408 when nothing was answered yet, and the app sees the client go.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from genloom.api.errors import error_body
from genloom.config import ServerSettings


def uvicorn_config(app: ASGIApp, settings: ServerSettings, **options: Any) -> uvicorn.Config:
    """The uvicorn config Genloom serves with; `options` are uvicorn's own (log_level, ...)."""
    return uvicorn.Config(app, http=bounded_protocol(settings), **options)


def bounded_protocol(settings: ServerSettings) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol with the head size and read timeouts of `settings`."""

    class Bounded(_BoundedHttpToolsProtocol):
        max_header_bytes = settings.max_header_bytes
        header_timeout_s = settings.header_timeout_s
        body_timeout_s = settings.body_timeout_s

    return Bounded


class _BoundedHttpToolsProtocol(HttpToolsProtocol):
    # Hooks uvicorn's own parser callbacks; pyproject.toml pins uvicorn to one minor version for that.
    max_header_bytes: int
    header_timeout_s: float
    body_timeout_s: float

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._refused = False  # answered 431 or 408: whatever else comes is dropped
        self._in_head = True  # waiting for (the rest of) a request's head
        self._head_bytes = 0  # of the head being read, over all the chunks it came in
        self._parsed_bytes = 0  # of the head's request line and headers, as parsed
        self._in_body = False
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        counted = self._in_head  # the chunk that ends one request may begin the next: not counted
        if self._in_body:
            self._arm_body_timer()
        super().data_received(data)
        if counted and self._in_head and not self._refused:
            # A head arriving in many chunks: the parser holds at most one chunk more than the limit.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse_large_head()

    def on_message_begin(self) -> None:
        if self._refused:
            return
        super().on_message_begin()
        self._in_head = True
        self._parsed_bytes = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        if not self._refused:
            self._parsed_bytes += len(url)
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._refused:
            self._parsed_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._in_head = False
        self._head_bytes = 0
        self._cancel(self._head_timer)
        self._head_timer = None
        if self._parsed_bytes > self.max_header_bytes:  # a head that came in one chunk
            self._refuse_large_head()
            return
        if self.parser.should_upgrade() and self._should_upgrade():  # a WebSocket's protocol takes over
            super().on_headers_complete()
            return
        self._in_body = True
        self._arm_body_timer()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_body = False
        self._cancel(self._body_timer)
        self._body_timer = None
        super().on_message_complete()

    def _arm_head_timer(self) -> None:
        self._cancel(self._head_timer)
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _arm_body_timer(self) -> None:
        self._cancel(self._body_timer)
        self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timed_out)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, f"the request's headers did not arrive within {self.header_timeout_s:g} s")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body or self.transport.is_closing():
            return
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            self._arm_body_timer()  # the app has not read what came, or not asked for it yet: the client is not slow
            return
        if self.cycle is not None and not self.cycle.response_started:
            self._refuse(408, f"the request's body stopped arriving for {self.body_timeout_s:g} s")
        else:
            self.transport.close()

    def _refuse_large_head(self) -> None:
        self._refuse(431, f"the request's headers are larger than {self.max_header_bytes} bytes")

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._cancel_timers()
        code = "request_headers_too_large" if status == 431 else "request_timeout"
        body = json.dumps(error_body(message, "invalid_request_error", None, code)).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\nconnection: close\r\n\r\n", body,
        ]))
        self.transport.close()

    def _cancel_timers(self) -> None:
        self._cancel(self._head_timer)
        self._cancel(self._body_timer)
        self._head_timer = self._body_timer = None

    @staticmethod
    def _cancel(timer: asyncio.TimerHandle | None) -> None:
        if timer is not None:
            timer.cancel()
