"""Every generation waits here until a worker takes it: the scheduling policy, the in-process
queue, and the store that keeps accepted async jobs."""

from genloom.queue.jobs import ChoiceFinished, Job, JobEvent, JobFailed, JobStarted, PromptCounted, TokenEvent
from genloom.queue.memory import InMemoryQueue, QueueClosed
from genloom.queue.protocol import JobQueue, QueueUnavailable
from genloom.queue.scheduler import (
    QueueFull,
    RequestClass,
    SchedulerPolicy,
    TenantQueueFull,
    Tier,
    TierPolicy,
)

__all__ = [
    "ChoiceFinished",
    "InMemoryQueue",
    "JobQueue",
    "Job",
    "JobEvent",
    "JobFailed",
    "JobStarted",
    "PromptCounted",
    "QueueClosed",
    "QueueFull",
    "QueueUnavailable",
    "RequestClass",
    "SchedulerPolicy",
    "TenantQueueFull",
    "Tier",
    "TierPolicy",
    "TokenEvent",
]
