"""Logs: plain text, or with `logging.format: json` one JSON object per line carrying what is
known of the request being served (request id, trace id, tenant, model, version). A request's
fields live in a context variable: the HTTP middleware opens it, authentication and the
pipeline add to it, and every log line written while serving that request (its tasks included)
carries them. Known secrets (keys, tokens) are replaced by `[redacted]` in every line, and any
`Bearer …` or Genloom key pattern too, whatever logged it."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterable
from typing import Any

from opentelemetry import trace

_FIELDS: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("genloom_log_fields", default=None)
_KNOWN_ORDER = ("request_id", "trace_id", "tenant", "model", "version")
# A bearer credential, or a Genloom API key (gl-…), wherever it appears in a line.
_CREDENTIALS = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}|\bgl-[A-Za-z0-9_-]{16,}")
REDACTED = "[redacted]"


def open_request(**fields: str) -> contextvars.Token:
    """Start a request's log fields (in the HTTP middleware); `close_request` with the token."""
    return _FIELDS.set(dict(fields))


def close_request(token: contextvars.Token) -> None:
    _FIELDS.reset(token)


def bind(**fields: str | None) -> None:
    """Add what is known now (tenant, model, version) to the current request's log fields."""
    current = _FIELDS.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v})


def request_fields() -> dict[str, str]:
    """The current request's fields, its trace id among them when a span is current."""
    fields = dict(_FIELDS.get() or {})
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        fields["trace_id"] = format(ctx.trace_id, "032x")
    return fields


class Redactor(logging.Filter):
    """Replaces known secrets and credential patterns in every record's message."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return _CREDENTIALS.sub(lambda m: (m.group(1) or "") + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, the request's
    fields when there are any, and the exception's traceback as one string when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = request_fields()
        for key in _KNOWN_ORDER:
            if key in fields:
                line[key] = fields[key]
        for key in ("method", "path", "status", "duration_ms"):  # the access log's own fields
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The plain format, with the request id and trace id appended when known."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = request_fields()
        extra = " ".join(f"{k}={fields[k]}" for k in ("request_id", "trace_id") if k in fields)
        return f"{text} [{extra}]" if extra else text


def configure_logging(*, level: str, json_lines: bool, secrets: Iterable[str] = ()) -> None:
    """Every log line of the process (uvicorn's, libraries' and Genloom's) to stderr in one format,
    secrets scrubbed."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # theirs go through ours
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # aiosqlite logs every statement with its parameters at DEBUG: an upstream key registered
    # through the API (which no Redactor knows), prompts, outputs. Its INFO and above still show.
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
