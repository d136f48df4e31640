from __future__ import annotations

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
