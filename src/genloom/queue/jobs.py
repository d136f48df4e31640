"""A unit of generation work and the events it reports back, independent of what produced it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    """Lower value runs first; ties go by arrival. REALTIME is a client holding a connection."""

    REALTIME = 0
    ASYNC = 1


@dataclass(frozen=True)
class TokenEvent:
    """New text for one choice of a job."""

    index: int
    delta: str
    completion_tokens: int


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


JobEvent = TokenEvent | ChoiceFinished | JobFailed


@dataclass(eq=False)
class Job:
    """What the queue holds. `payload` is opaque here: the worker for `model` knows its type.

    `rows` is how many batch slots the job needs (one per choice)."""

    id: str
    model: str
    payload: Any
    emit: Callable[[JobEvent], None]
    rows: int = 1
    priority: Priority = Priority.REALTIME
    enqueued_at: float = field(default_factory=time.monotonic)
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()
