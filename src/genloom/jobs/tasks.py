"""What a job carries to its worker (the task payloads) and what comes back besides tokens
(pictures, vectors): plain dataclasses the gateway builds and the workers read, on either side
of a process boundary (`codec.py`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genloom.jobs.sampling import SamplingParams

DEFAULT_MAX_BATCH_TEXTS = 64  # texts one embedding batch holds; a job never asks for more rows than that


@dataclass(frozen=True)
class TextTask:
    """The payload of a text job: one prompt, n choices sampled with the same parameters.

    With a seed, choice i uses seed + i, so choices differ but the whole job is reproducible."""

    prompt_ids: tuple[int, ...]
    params: SamplingParams
    n: int = 1


@dataclass(frozen=True)
class RemoteTask:
    """The payload of a remote text job: the OpenAI request body to send (its `model` is replaced)."""

    path: str  # "/chat/completions" or "/completions"
    body: dict[str, Any]
    stream: bool = True  # False: one JSON answer, when nobody reads the tokens as they come


@dataclass(frozen=True)
class ImageTask:
    """One request's images. `seed` is the first image's; image i uses seed + i."""

    prompt: str
    negative_prompt: str | None
    n: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    scheduler: str | None  # None: the pipeline's own
    seed: int
    provenance: dict[str, Any] = field(default_factory=dict)  # written into every PNG with the parameters
    lora_scale: float = 1.0  # how strongly a LoRA version's adapter applies (0: the base's picture)

    @property
    def batch_key(self) -> tuple:
        """Tasks with the same key can share one denoising batch (and one adapter strength)."""
        return (self.width, self.height, self.steps, self.guidance_scale, self.scheduler, self.lora_scale)


@dataclass(frozen=True)
class EmbeddingTask:
    """The payload of an embedding job: the texts to embed, in order."""

    texts: tuple[str, ...]


@dataclass(frozen=True)
class EmbeddingsReady:
    """A job's result: one vector and one token count per text, in the task's order."""

    vectors: list[list[float]]
    token_counts: list[int]


@dataclass(frozen=True)
class ImagesReady:
    """A job's result: PNG bytes (provenance inside) and the provenance itself, per image."""

    pngs: list[bytes]
    provenance: list[dict[str, Any]]
