"""A fast mock OpenAI-compatible upstream for the gateway benchmark: raw asyncio HTTP/1.1, no framework.

    python bench/_mock_upstream.py --port 9100

POST /v1/chat/completions answers at once with a fixed 8-token reply: JSON, or (with `stream: true`)
server-sent events (a role chunk, 8 content chunks, a finish chunk, a usage chunk when
`stream_options.include_usage` asks for it, then `data: [DONE]`), each answer in one write with a
Content-Length. GET /health answers 200. Connections are kept alive; requests may be pipelined.
It uses uvloop when that is installed, so that the mock is never what a gateway waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

REPLY = ["The", " quick", " brown", " fox", " jumps", " over", " the", " dog."]
ANSWER = "".join(REPLY)
PROMPT_TOKENS = 12
MAX_HEADER_BYTES = 64 * 1024


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
            "connection: keep-alive\r\n\r\n")
    return head.encode() + body


def _json(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _usage(completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": completion_tokens,
            "total_tokens": PROMPT_TOKENS + completion_tokens}


def chat_answer(body: dict) -> bytes:
    model = body.get("model") or "mock"
    created = int(time.time())
    if not body.get("stream"):
        return _response("200 OK", "application/json", _json({
            "id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "logprobs": None,
                         "finish_reason": "stop"}],
            "usage": _usage(len(REPLY)),
        }))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    def chunk(choices: list[dict], usage: dict | None = None) -> bytes:
        payload = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": model,
                   "choices": choices}
        if include_usage:
            payload["usage"] = usage
        return b"data: " + _json(payload) + b"\n\n"

    parts = [chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])]
    parts += [chunk([{"index": 0, "delta": {"content": t}, "finish_reason": None}]) for t in REPLY]
    parts.append(chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    if include_usage:
        parts.append(chunk([], _usage(len(REPLY))))
    parts.append(b"data: [DONE]\n\n")
    return _response("200 OK", "text/event-stream", b"".join(parts))


def _error(status: str, message: str) -> bytes:
    return _response(status, "application/json", _json({"error": {"message": message, "type": "invalid_request_error"}}))


class MockProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > MAX_HEADER_BYTES:
                    self.transport.close()
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            method, path, _ = (head[0].split(" ", 2) + ["", ""])[:3]
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                self.transport.write(_error("411 Length Required", "send a Content-Length"))
                self.transport.close()
                return
            length = int(headers.get("content-length") or 0)
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body, self.buffer = self.buffer[end + 4:end + 4 + length], self.buffer[end + 4 + length:]
            self.transport.write(self.answer(method, path.split("?", 1)[0], body))

    def answer(self, method: str, path: str, body: bytes) -> bytes:
        if method == "GET" and path in ("/health", "/v1/models"):
            return _response("200 OK", "application/json", b'{"object":"list","data":[]}')
        if method != "POST" or path not in ("/v1/chat/completions", "/chat/completions"):
            return _error("404 Not Found", f"no route {method} {path}")
        try:
            return chat_answer(json.loads(body))
        except (ValueError, AttributeError) as e:
            return _error("400 Bad Request", f"the body is not a JSON object: {e}")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    args = p.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
