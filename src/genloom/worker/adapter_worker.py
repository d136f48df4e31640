"""A LoRA version served by its base's worker, as the rest of the process sees it: a worker with
no thread of its own, with the base's health and capacity (the batch its rows share) and the rows
of its own jobs as occupancy. Started,
it attaches its adapter to the base's worker (a `TextWorker`, whose batch rows then run with it, or
an `ImageWorker`, whose pipeline calls for it apply it); stopped, it detaches it."""

from __future__ import annotations

from typing import Any, Protocol

from genloom.queue.protocol import JobQueue
from genloom.worker.base import Worker, WorkerHealth, WorkerState


class AdapterHost(Protocol):
    """What a base's worker offers its attached versions."""

    model: str
    kind: str

    def attach(self, version: str, adapter: Any, timeout: float | None = None) -> None: ...
    def detach(self, version: str, message: str, timeout: float | None = None) -> None: ...
    def detach_if_idle(self, version: str, message: str, timeout: float | None = None) -> bool: ...
    def holds(self, version: str) -> bool: ...
    def rows_of(self, version: str) -> int: ...
    def health(self) -> WorkerHealth: ...
    @property
    def alive(self) -> bool: ...
    @property
    def capacity(self) -> int: ...


class AdapterWorker(Worker):
    kind = "text"  # the base's kind, set per instance

    def __init__(self, *, version: str, base: AdapterHost, adapter: Any, queue: JobQueue) -> None:
        """`adapter`: what the base's `attach` takes (text: `LoraWeights`; image: a LoRA file's path)."""
        super().__init__(model=version, queue=queue, idle_wait_s=0.0)
        self.kind = base.kind
        self.base = base
        self._adapter: Any = adapter
        self._started = False

    def start(self) -> None:
        assert self._adapter is not None, "an adapter worker starts once"
        self.base.attach(self.model, self._adapter)
        self._adapter = None  # the base holds it now
        self._started = True

    def stop(self, timeout: float | None = None) -> None:
        """Detach from the base, failing what it holds there (retryable); TimeoutError when the
        base's round does not end within `timeout` (then it stays attached)."""
        if self._started and not self._stop.is_set():
            self.base.detach(self.model, self._unloaded, timeout)
            self._stop.set()

    def stop_if_idle(self, timeout: float | None = None) -> bool:
        """Detach only if none of its rows is in the base's batch now; whether it did."""
        if not self._started or self._stop.is_set():
            return True
        if not self.base.detach_if_idle(self.model, self._unloaded, timeout):
            return False
        self._stop.set()
        return True

    @property
    def _unloaded(self) -> str:
        return f"model {self.model} was unloaded from this process; retry the request"

    @property
    def alive(self) -> bool:
        return self._started and not self._stop.is_set() and self.base.alive

    def health(self) -> WorkerHealth:
        if self._stop.is_set():
            return WorkerHealth(WorkerState.STOPPED)
        if not self._started:
            return WorkerHealth(WorkerState.STARTING)
        return self.base.health()

    @property
    def busy(self) -> bool:
        return self.base.holds(self.model)

    @property
    def occupancy(self) -> int:
        return self.base.rows_of(self.model)

    @property
    def capacity(self) -> int:
        return self.base.capacity

    def _round(self, wait_s: float) -> int | None:  # the base's rounds run its work
        return None

    def _fail_held(self, message: str, shutdown: bool = False) -> None:  # the base holds its jobs
        pass
