"""One text request on its way through the pipeline: what each stage found out, for the next."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from genloom.gateway.pipeline.guard import GuardResult, Guarded
from genloom.gateway.rate_limit import Admission
from genloom.gateway.text_service import Completion, PreparedText, TextRequest
from genloom.jobs import Job, TraceContext
from genloom.store import RequestStatus


@dataclass
class TextCall:
    request: TextRequest
    prepared: PreparedText | None = None  # resolve: checked against its version
    admission: Admission | None = None  # admit: what was charged, settled at the end
    completion: Completion | None = None  # submit: the answer as it grows; None until submitted
    job: Job | None = None  # submit: the queued job of the current attempt
    accepted: bool = False  # submit: a queue took it
    status: RequestStatus = RequestStatus.FAILED
    error: str | None = None
    client_fault: bool = False  # an upstream refused the request itself: no verdict on the version
    cache_key: str | None = None  # cache: the exact key, taken once for lookup and store
    created: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    span: Any = None  # the request's GenAI span when tracing is on
    trace: TraceContext | None = None  # what its jobs carry to join that span's trace
    guarded: GuardResult | None = None  # guard input: what it found, and what to restore in the answer

    def texts(self) -> list[str]:
        return request_texts(self.request)

    def roles(self) -> list[str | None]:
        return request_roles(self.request)

    @property
    def who(self) -> Guarded:
        return guarded(self.request)

    def with_texts(self, texts: list[str]) -> None:
        """The request with its texts replaced (redacted), in the order `texts()` gave them."""
        self.request = with_texts(self.request, texts)


def request_texts(request: TextRequest) -> list[str]:
    """A text request's text as the guards read it: every message's content, or the prompt."""
    if request.messages is not None:
        return [m.get("content") if isinstance(m.get("content"), str) else "" for m in request.messages]
    return [request.prompt or ""]


def request_roles(request: TextRequest) -> list[str | None]:
    """Who wrote each of `request_texts` (None for a completion's prompt)."""
    if request.messages is not None:
        return [m.get("role") for m in request.messages]
    return [None]


def guarded(request: TextRequest) -> Guarded:
    return Guarded(tenant=request.tenant, request_id=request.id, overrides=request.guardrails, limits=request.limits)


def with_texts(request: TextRequest, texts: list[str]) -> TextRequest:
    if request.messages is not None:
        messages = [m | {"content": t} if isinstance(m.get("content"), str) else m for m, t in zip(request.messages, texts)]
        return replace(request, messages=messages)
    return replace(request, prompt=texts[0])
