"""What can go wrong before or while a request runs, in words a client can act on.

The HTTP status and OpenAI error type of each lives in api/errors.py."""

from __future__ import annotations


class ModelNotFound(LookupError):
    def __init__(self, model: str, available: list[str]) -> None:
        names = ", ".join(available) or "none"
        super().__init__(f"the model '{model}' does not exist; available models: {names}")
        self.model = model


class InvalidRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class NotReady(RuntimeError):
    """The server is starting or shutting down."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NoWorker(NotReady):
    """Scaled out: no live worker takes jobs for this model, so a request would only wait."""

    def __init__(self, model: str, retry_after_s: int = 5) -> None:
        super().__init__(
            f"no worker is running model '{model}' now; start a `genloom worker` for it or retry later", retry_after_s
        )
        self.model = model


class TimedOut(RuntimeError):
    """A request waited longer than its tier allows: for a place in a batch (503) or for its
    worker to go on (504)."""

    def __init__(self, message: str, *, started: bool, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.started = started
        self.retry_after_s = retry_after_s


class GenerationFailed(RuntimeError):
    """The model failed while running an accepted request."""
