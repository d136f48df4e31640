"""Workers pull jobs from the queue and run them on a runtime."""

from genloom.worker.text_worker import TextTask, TextWorker

__all__ = ["TextTask", "TextWorker"]
