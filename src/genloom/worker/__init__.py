"""Workers take jobs from the queue and run them on a runtime: one thread per model version."""

from genloom.worker.base import Worker, WorkerHealth, WorkerState
from genloom.worker.text_worker import TextWorker

__all__ = ["TextWorker", "Worker", "WorkerHealth", "WorkerState"]
