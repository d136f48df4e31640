"""Bounded inputs on a real server (uvicorn as `genloom serve` configures it): headers too large
(431), clients too slow with their headers or body (408 and the connection closed), bodies too
large (413) and JSON nested too deeply (400), each answered at once in OpenAI's error shape,
never a hang or a 500; the server keeps serving after each."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genloom.gateway.json_depth import JsonNesting, json_depth
from tests.security.conftest import ADMIN_KEY, secured_server

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model_dir) -> Iterator[str]:
    server = {"header_timeout_s": HEADER_TIMEOUT_S, "body_timeout_s": BODY_TIMEOUT_S, "max_header_bytes": 65_536}
    with secured_server(tmp_path_factory.mktemp("bounded"), tiny_model_dir, server=server) as (url, _):
        yield url


def _connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (at most 10 s)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def _status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)["error"]


def _still_serving(base: str) -> None:
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("size", [100_000, 10_000_000])
def test_oversized_headers_get_431_at_once(base, size):
    sock = _connect(base)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while the rest was still being sent
    try:
        raw = _read_all(sock)
    except ConnectionResetError:
        raw = b""
    finally:
        sock.close()
    assert time.monotonic() - started < 5
    if raw:  # a 10 MB send may see the connection reset before the answer is read
        status, error = _status_and_error(raw)
        assert status == 431 and error["code"] == "request_headers_too_large", raw[:300]
    else:
        assert size > 1_000_000
    _still_serving(base)


def test_headers_within_the_limit_are_served(base):
    answer = httpx.get(f"{base}/v1/models", headers={**AUTH, "X-Big": "a" * 30_000})
    assert answer.status_code == 200


def test_a_client_that_connects_and_sends_nothing_is_cut_off(base):
    sock = _connect(base)
    started = time.monotonic()
    raw = _read_all(sock)
    sock.close()
    assert HEADER_TIMEOUT_S * 0.8 < time.monotonic() - started < HEADER_TIMEOUT_S + 3
    status, error = _status_and_error(raw)
    assert status == 408 and error["code"] == "request_timeout"
    _still_serving(base)


def test_headers_sent_a_line_at_a_time_are_cut_off_at_the_header_deadline(base):
    sock = _connect(base)
    started = time.monotonic()
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
    raw = b""
    for n in range(40):  # slowloris: a header every 0.1 s, never the blank line
        try:
            sock.sendall(f"X-Slow-{n}: 1\r\n".encode())
        except OSError:
            break
        time.sleep(0.1)
        sock.setblocking(False)
        try:
            raw = sock.recv(65536)
        except BlockingIOError:
            pass
        sock.setblocking(True)
        if raw:
            break
    raw += _read_all(sock) if raw else b""
    sock.close()
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 3
    status, error = _status_and_error(raw)
    assert status == 408 and "headers did not arrive" in error["message"]
    _still_serving(base)


def test_a_body_that_stops_arriving_is_cut_off(base):
    sock = _connect(base)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}).encode()
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {ADMIN_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:10]
    )
    started = time.monotonic()
    raw = _read_all(sock)
    sock.close()
    assert BODY_TIMEOUT_S * 0.8 < time.monotonic() - started < BODY_TIMEOUT_S + 3
    status, error = _status_and_error(raw)
    assert status == 408 and "body stopped arriving" in error["message"]
    _still_serving(base)


def test_a_keep_alive_connection_serves_several_requests_within_the_deadlines(base):
    with httpx.Client(base_url=base, headers=AUTH, timeout=10) as http:
        for _ in range(3):
            assert http.get("/v1/models").status_code == 200
            time.sleep(HEADER_TIMEOUT_S * 0.6)  # idle between requests is the keep-alive's business


def test_a_body_over_the_limit_gets_413(base):
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "a" * 2_000_000}]}).encode()
    answer = httpx.post(f"{base}/v1/chat/completions", content=big, headers={**AUTH, "content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 65536

    streamed = httpx.post(f"{base}/v1/chat/completions", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert streamed.status_code == 413


def _nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize("kind", ["array", "object"])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/jobs", "/v1/admin/tenants", "/v1/embeddings"])
def test_json_nested_10000_deep_gets_400_in_openai_shape(base, kind, path):
    body = '{"model": "tiny", "metadata": ' + _nested(10_000, kind) + "}"
    answer = httpx.post(f"{base}{path}", content=body, headers={**AUTH, "content-type": "application/json"}, timeout=30)
    assert answer.status_code == 400, answer.text[:300]
    error = answer.json()["error"]
    assert error["code"] == "json_too_deep" and "more than 64 levels" in error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] is None


def test_json_at_the_depth_limit_is_parsed_and_one_more_level_is_refused(base):
    headers = {**AUTH, "content-type": "application/json"}
    at_limit = '{"name": "deep", "limits": ' + _nested(63, "object") + "}"  # 64 levels with the outer object
    answer = httpx.post(f"{base}/v1/admin/tenants", content=at_limit, headers=headers)
    assert answer.status_code == 400 and answer.json()["error"]["code"] != "json_too_deep"  # the schema's own 400
    over = '{"name": "deep", "limits": ' + _nested(64, "object") + "}"
    assert httpx.post(f"{base}/v1/admin/tenants", content=over, headers=headers).json()["error"]["code"] == "json_too_deep"


def test_a_batch_line_nested_too_deeply_is_a_line_error_not_a_500(base):
    line = {"custom_id": "deep", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}}
    text = json.dumps(line)[:-1] + ', "x": ' + _nested(5_000, "array") + "}\n"  # json.loads would recurse 5000 deep
    with httpx.Client(base_url=base, headers=AUTH, timeout=60) as http:
        uploaded = http.post("/v1/files", files={"file": ("deep.jsonl", text.encode())}, data={"purpose": "batch"})
        assert uploaded.status_code == 200, uploaded.text  # multipart uploads are not JSON bodies
        batch = http.post("/v1/batches", json={"input_file_id": uploaded.json()["id"], "endpoint": "/v1/chat/completions"})
        assert batch.status_code == 200, batch.text
        assert batch.json()["request_counts"]["failed"] == 1
        errors = http.get(f"/v1/files/{batch.json()['error_file_id']}/content").text
        assert "levels deep" in errors


def test_the_depth_limit_is_a_setting(tmp_path, tiny_model_dir):
    with secured_server(tmp_path, tiny_model_dir, api={"max_json_depth": 3}) as (url, _):
        headers = {**AUTH, "content-type": "application/json"}
        answer = httpx.post(f"{url}/v1/admin/tenants", content='{"name": "x", "limits": {"a": [[1]]}}', headers=headers)
        assert answer.status_code == 400 and "more than 3 levels" in answer.json()["error"]["message"]


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n\u00e9'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\a', max_size=3), inner, max_size=3),
    max_leaves=25,
)


def _depth(value) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    return 1 + max(map(_depth, value), default=0) if isinstance(value, list) else 0


@settings(max_examples=300, derandomize=True, deadline=None)
@given(_VALUES, st.lists(st.integers(1, 7), min_size=1, max_size=5))
def test_json_nesting_counts_what_a_parser_would_in_any_chunking(value, cuts):
    text = json.dumps(value, ensure_ascii=False).encode()
    assert json_depth(text) == _depth(value)
    nesting, at = JsonNesting(), 0
    for step in (cuts * len(text))[: len(text)]:
        nesting.feed(text[at:at + step])
        at += step
        if at >= len(text):
            break
    assert nesting.deepest == _depth(value)
