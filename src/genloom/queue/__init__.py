"""Every generation waits here until a worker takes it: the scheduling policy and the queue
backends behind one interface (in process, or shared through Redis)."""

from genloom.queue.memory import InMemoryQueue
from genloom.queue.protocol import JobQueue, QueueClosed, QueueUnavailable
from genloom.queue.scheduler import QueueFull, SchedulerPolicy, TenantQueueFull, TierPolicy

__all__ = [
    "InMemoryQueue",
    "JobQueue",
    "QueueClosed",
    "QueueFull",
    "QueueUnavailable",
    "SchedulerPolicy",
    "TenantQueueFull",
    "TierPolicy",
]
