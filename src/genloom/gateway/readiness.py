from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ServerState(str, Enum):
    """starting -> ready -> draining; failed when a model could not be loaded."""

    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class Readiness:
    """Whether this server can take work now, and why not."""

    def __init__(self) -> None:
        self.state = ServerState.STARTING
        self.reason = "loading models"

    def set(self, state: ServerState, reason: str = "") -> None:
        self.state, self.reason = state, reason

    @property
    def ready(self) -> bool:
        return self.state is ServerState.READY


@dataclass(frozen=True)
class WorkerStatus:
    """One worker thread of this process as the health routes show it."""

    model: str
    kind: str
    state: str  # a WorkerState value
    reason: str | None
    fatal: bool  # dead or hung: a restart would help
    cut_off: bool  # waiting for the queue's Redis to answer again
