"""Which models have a live worker, as an API replica last read it from the workers' heartbeats
(`queue/workers.py`). A request for a model without one is refused at once (503 `no_worker`)
instead of waiting in a line nobody takes from. Where this process runs the workers itself the
view is not kept (None) and nothing is refused."""

from __future__ import annotations

from collections.abc import Mapping

from genloom.gateway.errors import NoWorker


class WorkerPresence:
    def __init__(self, *, retry_after_s: int = 5) -> None:
        self._live: dict[str, int] | None = None  # model -> live worker processes taking it
        self.retry_after_s = retry_after_s

    def update(self, live: Mapping[str, int]) -> None:
        self._live = {model: n for model, n in live.items() if n > 0}

    def forget(self) -> None:
        """The workers cannot be read now (Redis is away): refuse nothing on an old view."""
        self._live = None

    @property
    def known(self) -> bool:
        return self._live is not None

    def has_worker(self, model: str) -> bool:
        return self._live is None or model in self._live

    def require(self, model: str) -> None:
        if not self.has_worker(model):
            raise NoWorker(model, self.retry_after_s)

    def counts(self) -> dict[str, int]:
        """Live worker processes per model, as last read (empty while unknown)."""
        return dict(self._live or {})

    def without_workers(self, models: list[str]) -> list[str]:
        return sorted(m for m in models if not self.has_worker(m))
