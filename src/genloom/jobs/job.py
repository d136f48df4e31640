"""A unit of generation work and the events it reports back, independent of what produced it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class RequestClass(str, Enum):
    """Strict priority, first listed first: every eligible REALTIME entry goes before any ASYNC one."""

    REALTIME = "realtime"
    ASYNC = "async"


class Tier(str, Enum):
    """Service tiers within a class; their shares and wait bounds come from `TierPolicy`, not this order."""

    PREMIUM = "premium"
    STANDARD = "standard"
    FREE = "free"


@dataclass(frozen=True)
class JobStarted:
    """A worker took the job into its batch."""


@dataclass(frozen=True)
class TokenLogprob:
    """One output token's log-probability, and the likeliest tokens at its position (text, logprob)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TokenEvent:
    """New text for one choice of a job, and the new tokens' log-probabilities when asked for
    (a token's text may come in a later event: text that could start a stop sequence waits)."""

    index: int
    delta: str
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class ChoiceFinished:
    index: int
    finish_reason: str
    completion_tokens: int


@dataclass(frozen=True)
class JobFailed:
    message: str
    retryable: bool = False
    shutdown: bool = False  # the server stopped before the job finished
    before_output: bool = False  # nothing was produced yet, so another model may answer instead
    rejected: bool = False  # the request itself is bad (an upstream answered 400): no model will answer it


@dataclass(frozen=True)
class PromptCounted:
    """The prompt's token count, when only the model that ran it knows (a remote upstream)."""

    prompt_tokens: int


JobEvent = JobStarted | TokenEvent | ChoiceFinished | JobFailed | PromptCounted


@dataclass(frozen=True)
class TraceContext:
    """The trace a job belongs to, as W3C trace context, carried with the job through the queue
    (across processes) so the worker's spans join the request's trace; `queued_ns` (wall clock)
    is when it was queued, where its wait in the queue began."""

    traceparent: str
    tracestate: str = ""
    queued_ns: int = 0


@dataclass(frozen=True)
class Traced:
    """What a shared queue stores for a job with a trace: its payload and the context."""

    payload: Any
    trace: TraceContext


@dataclass(eq=False)
class Job:
    """What the queue holds. `payload` is opaque here: the worker for `model` knows its type.

    `rows` is how many batch slots the job needs (one per choice); class, tier, tenant and cost
    are what the scheduler orders by; `not_before` (monotonic clock) delays a retry."""

    id: str
    model: str
    payload: Any
    emit: Callable[[JobEvent], None]
    rows: int = 1
    request_class: RequestClass = RequestClass.REALTIME
    tier: Tier = Tier.FREE
    tenant: str = "default"
    cost: float = 1.0
    not_before: float = 0.0
    enqueued_at: float = field(default_factory=time.monotonic)
    deliveries: int = 1  # how many times a shared queue has handed it to a worker, this time included
    trace: TraceContext | None = None  # the request's trace, when tracing is on
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)
    _on_cancel: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def cancel(self) -> None:
        """Stop the job wherever it is: its queue is told (a shared queue tells the worker holding it)."""
        if self._cancelled.is_set():
            return
        self._cancelled.set()
        for hook in self._on_cancel:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> None:
        """Call `hook` once when the job is cancelled (at once if it already is)."""
        self._on_cancel.append(hook)
        if self._cancelled.is_set():
            hook()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()
