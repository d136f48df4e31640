"""The log formats, the secret scrubber, and when tracing turns itself on."""

from __future__ import annotations

import json
import logging

import pytest

from genloom.telemetry.logs import JsonFormatter, Redactor, bind, close_request, open_request
from genloom.telemetry.tracing import NO_TRACING, setup_tracing, tracing_wanted


def record(message: str, *args, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("genloom.test", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_json_line_carries_the_request_fields_bound_while_serving_it():
    token = open_request(request_id="req_1")
    try:
        bind(tenant="acme", model="tiny", version=None)
        line = json.loads(JsonFormatter().format(record("hello %s", "world")))
    finally:
        close_request(token)
    assert line["message"] == "hello world" and line["level"] == "warning" and line["logger"] == "genloom.test"
    assert line["request_id"] == "req_1" and line["tenant"] == "acme" and line["model"] == "tiny"
    assert "version" not in line and line["time"].endswith("Z")
    outside = json.loads(JsonFormatter().format(record("later")))
    assert "request_id" not in outside and "tenant" not in outside


def test_an_exception_is_one_json_string_not_many_lines():
    try:
        raise ValueError("boom")
    except ValueError as e:
        text = JsonFormatter().format(record("failed", exc=e))
    assert "\n" not in text and "ValueError: boom" in json.loads(text)["exception"]


@pytest.mark.parametrize("message", [
    "calling upstream with key sk-known-secret-123",
    "header was 'Authorization: Bearer abcdefgh12345678'",
    "a key gl-AbCdEfGhIjKlMnOpQrStUvWx in the text",
])
def test_known_secrets_and_credential_patterns_are_redacted(message):
    r = record(message)
    assert Redactor(["sk-known-secret-123"]).filter(r)
    text = r.getMessage()
    assert "[redacted]" in text
    assert "sk-known-secret-123" not in text and "abcdefgh12345678" not in text and "AbCdEfGhIjKlMnOpQrStUvWx" not in text


def test_secrets_in_arguments_and_tracebacks_are_redacted_too():
    r = record("upstream said %s", "no: sk-known-secret-123")
    Redactor(["sk-known-secret-123"]).filter(r)
    assert "sk-known-secret-123" not in r.getMessage()
    try:
        raise RuntimeError("key sk-known-secret-123 refused")
    except RuntimeError as e:
        r = record("failed", exc=e)
    Redactor(["sk-known-secret-123"]).filter(r)
    assert "sk-known-secret-123" not in JsonFormatter().format(r)


@pytest.mark.parametrize(("environ", "wanted"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
])
def test_tracing_is_on_only_when_the_environment_names_an_exporter(environ, wanted):
    assert tracing_wanted(environ) is wanted
    tracing = setup_tracing(service="genloom-test", environ=environ)
    try:
        assert tracing.enabled is wanted and (tracing is NO_TRACING) is not wanted
    finally:
        tracing.shutdown()
