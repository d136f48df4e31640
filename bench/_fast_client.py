"""A lean HTTP/1.1 keep-alive client for the gateway benchmark: one connection per concurrent worker,
each request one prebuilt write, responses read by Content-Length or chunked encoding.

It exists because the load generator shares two CPUs with the servers it measures: httpx spends
about 0.6 ms of CPU a request and, with 64 connections in one pool, its p99 against the bare mock
upstream reached hundreds of milliseconds, so it measured itself. This one does only what the
benchmark needs (POST a JSON body, read JSON or server-sent events) and checks every reply.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass


class ProtocolError(Exception):
    """The server answered something this client does not read (or closed the connection)."""


@dataclass
class Outcome:
    latency_s: float
    ttft_s: float | None = None  # streamed requests: to the first non-empty content delta
    text: str = ""
    error: str | None = None


def request_bytes(*, host: str, port: int, path: str, headers: dict[str, str], body: dict) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    return "\r\n".join(lines).encode() + payload


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
        self.reader = self.writer = None

    async def send(self, raw: bytes, *, stream: bool) -> Outcome:
        """One request; a connection that fails is closed, and the next request opens a new one."""
        start = time.perf_counter()
        out = Outcome(latency_s=0.0)
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(raw)
            await self._read(out, start, stream)
        except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError) as e:
            out.error = out.error or f"{type(e).__name__}: {e}"[:200]
            await self.close()
        out.latency_s = time.perf_counter() - start
        return out

    async def _read(self, out: Outcome, start: float, stream: bool) -> None:
        assert self.reader is not None
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        events = _Events(out, start) if stream and status == 200 else None
        body = bytearray()
        if "chunked" in headers.get("transfer-encoding", ""):
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if events is not None:
                    events.feed(data[:-2])
                else:
                    body += data[:-2]
        elif "content-length" in headers:
            data = await self.reader.readexactly(int(headers["content-length"]))
            if events is not None:
                events.feed(data)
            else:
                body += data
        else:
            raise ProtocolError("a response with neither Content-Length nor chunked encoding")
        if headers.get("connection") == "close":
            await self.close()
        if status != 200:
            out.error = f"HTTP {status}: {bytes(body[:200]).decode(errors='replace')}"
        elif events is not None:
            events.finish()
        else:
            out.text = json.loads(body)["choices"][0]["message"]["content"]


class _Events:
    """Reads server-sent events as they arrive: the reply's text, TTFT, and an error event if any."""

    def __init__(self, out: Outcome, start: float) -> None:
        self.out, self.start = out, start
        self.buffer = b""
        self.parts: list[str] = []
        self.done = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        *events, self.buffer = self.buffer.replace(b"\r\n", b"\n").split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    self.done = True
                    continue
                chunk = json.loads(payload)
                if "error" in chunk:
                    self.out.error = str(chunk["error"])[:200]
                for choice in chunk.get("choices") or ():
                    if text := (choice.get("delta") or {}).get("content"):
                        if self.out.ttft_s is None:
                            self.out.ttft_s = time.perf_counter() - self.start
                        self.parts.append(text)

    def finish(self) -> None:
        self.out.text = "".join(self.parts)
        if not self.done and self.out.error is None:
            self.out.error = "the stream ended without data: [DONE]"
