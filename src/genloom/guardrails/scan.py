"""What every scanner returns: a category, a calibrated score in [0, 1] and the spans of text
that made it (character offsets into the text the scanner was given)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    label: str  # PII: the entity type (EMAIL, PHONE, ...); secrets: the kind; injection: the rule


@dataclass(frozen=True)
class Finding:
    scanner: str  # prompt_injection | pii | secrets | unsafe
    category: str  # the scanner's own name, or a sub-category (unsafe: violence, self_harm, ...)
    score: float  # calibrated: about the probability that the category applies
    spans: tuple[Span, ...] = ()


class Scanner(Protocol):
    name: str
    categories: tuple[str, ...]  # every category its findings may carry

    def scan(self, text: str) -> list[Finding]:
        """One finding per category of this scanner, its score even when low (the moderation
        API reports every category's score). Pure CPU, no I/O; safe to call from threads."""
        ...
