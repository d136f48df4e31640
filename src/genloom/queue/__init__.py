"""Every generation waits here until a worker takes it."""

from genloom.queue.jobs import ChoiceFinished, Job, JobEvent, JobFailed, Priority, TokenEvent
from genloom.queue.memory import InMemoryQueue, QueueClosed, QueueFull

__all__ = [
    "ChoiceFinished",
    "InMemoryQueue",
    "Job",
    "JobEvent",
    "JobFailed",
    "Priority",
    "QueueClosed",
    "QueueFull",
    "TokenEvent",
]
