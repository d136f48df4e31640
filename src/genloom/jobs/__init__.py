"""What a job is and says, as data: the unit of work every layer passes along (api → gateway →
queue → worker → runtimes), its payloads and events, its stored record. It imports nothing of
Genloom's but itself, so every layer may import it."""

from genloom.jobs.job import (
    ChoiceFinished,
    Job,
    JobEvent,
    JobFailed,
    JobStarted,
    PromptCounted,
    RequestClass,
    Tier,
    TokenEvent,
    TokenLogprob,
    Traced,
    TraceContext,
)
from genloom.jobs.sampling import SamplingParams
from genloom.jobs.tasks import EmbeddingsReady, EmbeddingTask, ImagesReady, ImageTask, RemoteTask, TextTask

__all__ = [
    "ChoiceFinished", "EmbeddingTask", "EmbeddingsReady", "ImageTask", "ImagesReady", "Job", "JobEvent", "JobFailed",
    "JobStarted", "PromptCounted", "RemoteTask", "RequestClass", "SamplingParams", "TextTask", "Tier", "TokenEvent",
    "TokenLogprob", "TraceContext", "Traced",
]
