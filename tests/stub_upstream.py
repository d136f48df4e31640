"""A real OpenAI-compatible upstream for tests: FastAPI and uvicorn on 127.0.0.1, in a thread.

    with running_stub(Behaviour(mode=StubMode.ERROR_500)) as stub:
        stub.base_url                      # "http://127.0.0.1:<port>/v1"
        stub.behaviour.mode = StubMode.OK  # read afresh on every request, so switch it any time
        stub.requests                      # every request received: path, headers, body

It serves POST /v1/chat/completions and /v1/completions, answering JSON or, when the body asks
for `stream: true`, server-sent events ending in `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


class StubMode(str, Enum):
    OK = "ok"
    ERROR_500 = "error_500"
    ERROR_429 = "error_429"  # with Retry-After: `Behaviour.retry_after`
    ERROR_400 = "error_400"  # OpenAI-shaped; its message quotes the Authorization header, to prove it is scrubbed
    ERROR_401 = "error_401"  # the same, as a vendor refusing a wrong key does
    SLOW = "slow"  # waits `delay_s` before sending anything at all
    SLOW_FIRST_CHUNK = "slow_first_chunk"  # streams keep-alive comments for `delay_s`, then the chunks
    STREAM_DIES_BEFORE_FIRST_CHUNK = "stream_dies_before_first_chunk"  # sends headers, then drops the connection
    STREAM_DIES_MIDWAY = "stream_dies_midway"  # drops the connection after `die_after` chunks
    BAD_JSON = "bad_json"  # 200 with a body (or stream event) that is not JSON


@dataclass
class Behaviour:
    mode: StubMode = StubMode.OK
    chunks: int = 3  # chunks in a stream; the last one carries finish_reason "stop"
    die_after: int = 1
    delay_s: float = 1.0
    retry_after: str | None = "1"
    reply: str | None = None  # the answer's text (streamed in `chunks` pieces) instead of "tok0 tok1 ..."
    echo: bool = False  # the answer is the last message's content (or the prompt), as received
    answer: Callable[[str], str] | None = None  # the answer made from the last message's content (or the prompt)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ConnectionDropped(Exception):
    """Raised inside a response that has started, which makes uvicorn close the connection."""


class _HideDeliberateDrops(logging.Filter):
    """uvicorn logs a traceback for every dropped connection; ours are on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


_HIDE_DELIBERATE_DROPS = _HideDeliberateDrops()


@dataclass
class StubUpstream:
    behaviour: Behaviour
    port: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> FastAPI:
        paths = ("/v1/chat/completions", "/v1/completions")
        return FastAPI(routes=[Route(path, self._answer, methods=["POST"]) for path in paths])

    async def _answer(self, request: Request) -> Response:
        body = await request.json()
        self.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
        b, chat = self.behaviour, request.url.path.endswith("/chat/completions")
        said_by = f"(sent with authorization {request.headers.get('authorization')!r})"
        if b.mode is StubMode.ERROR_500:
            return _error(500, "server_error", "the stub failed on purpose")
        if b.mode is StubMode.ERROR_429:
            headers = {"retry-after": b.retry_after} if b.retry_after is not None else {}
            return _error(429, "rate_limit_exceeded", "slow down", headers=headers)
        if b.mode is StubMode.ERROR_400:
            return _error(400, "invalid_request_error", f"'messages' is not valid {said_by}", param="messages")
        if b.mode is StubMode.ERROR_401:
            return _error(401, "invalid_api_key", f"incorrect API key {said_by}")
        if b.mode is StubMode.SLOW:
            await asyncio.sleep(b.delay_s)
        pieces = _pieces(b, body, chat)
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = self._events(b, body["model"], chat, include_usage, pieces)
            return StreamingResponse(events, media_type="text/event-stream")
        if b.mode is StubMode.BAD_JSON:
            return Response("{this is not json", media_type="application/json")
        return JSONResponse(_completion(body["model"], chat, "".join(pieces)))

    async def _events(self, b: Behaviour, model: str, chat: bool, include_usage: bool, pieces: list[str]) -> AsyncIterator[str]:
        if b.mode is StubMode.STREAM_DIES_BEFORE_FIRST_CHUNK:
            raise ConnectionDropped("before the first chunk")
        if b.mode is StubMode.BAD_JSON:
            yield "data: {this is not json\n\n"
            return
        if b.mode is StubMode.SLOW_FIRST_CHUNK:
            deadline = time.monotonic() + b.delay_s
            while time.monotonic() < deadline:
                yield ": keep-alive\n\n"
                await asyncio.sleep(0.02)
        for i, piece in enumerate(pieces):
            if b.mode is StubMode.STREAM_DIES_MIDWAY and i == b.die_after:
                raise ConnectionDropped(f"after {i} chunks")
            last = i == len(pieces) - 1
            yield f"data: {json.dumps(_chunk(model, chat, piece, 'stop' if last else None))}\n\n"
        if include_usage:  # as OpenAI does: a last chunk with no choices, only usage
            usage = {"prompt_tokens": 3, "completion_tokens": 2 * b.chunks, "total_tokens": 3 + 2 * b.chunks}
            yield f"data: {json.dumps({'id': 'stub-1', 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"


def _piece(i: int) -> str:
    return f"tok{i} "


def _pieces(b: Behaviour, body: dict[str, Any], chat: bool) -> list[str]:
    """The answer's text in `b.chunks` pieces."""
    text = b.reply
    if b.echo or b.answer is not None:
        text = body["messages"][-1]["content"] if chat else body["prompt"]
        if b.answer is not None:
            text = b.answer(text)
    if text is None:
        return [_piece(i) for i in range(b.chunks)]
    size = max(1, -(-len(text) // b.chunks))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _error(
    status: int, kind: str, message: str, *, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _completion(model: str, chat: bool, text: str) -> dict[str, Any]:
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    else:
        choice = {"index": 0, "text": text, "finish_reason": "stop"}
    usage = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    obj = "chat.completion" if chat else "text_completion"
    return {"id": "stub-1", "object": obj, "created": 0, "model": model, "choices": [choice], "usage": usage}


def _chunk(model: str, chat: bool, text: str, finish_reason: str | None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason}
    choice |= {"delta": {"content": text}} if chat else {"text": text}
    obj = "chat.completion.chunk" if chat else "text_completion"
    return {"id": "stub-1", "object": obj, "created": 0, "model": model, "choices": [choice]}


@contextmanager
def running_stub(behaviour: Behaviour | None = None) -> Iterator[StubUpstream]:
    """Serve a stub until the block ends; it listens before the block starts."""
    stub = StubUpstream(behaviour or Behaviour())
    # Bound here and handed to uvicorn, so no other process can take the port in between.
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    stub.port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(stub.app(), log_level="warning", lifespan="off"))
    logging.getLogger("uvicorn.error").addFilter(_HIDE_DELIBERATE_DROPS)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the stub upstream did not start")
            time.sleep(0.01)
        yield stub
    finally:
        # force_exit: a `slow` answer still sleeping must not hold up the test run.
        server.should_exit = server.force_exit = True
        thread.join(10)
        sock.close()
