"""Stages 2 and 6, guard input and guard output: every guard reads the request's text (or the
answer's) and allows, redacts or blocks it. No guard is installed yet, so both stages pass
everything through; the guardrails issue adds scanners behind the `Guard` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from genloom.telemetry import Observer


class GuardAction(str, Enum):
    """Least severe first."""

    ALLOW = "allow"
    REDACT = "redact"
    BLOCK = "block"


@dataclass(frozen=True)
class GuardVerdict:
    scanner: str
    action: GuardAction
    category: str | None = None
    score: float = 0.0
    message: str = ""


class GuardBlocked(Exception):
    """A guard refused the request or the answer (400, code content_policy_violation)."""

    def __init__(self, verdict: GuardVerdict, stage: str) -> None:
        what = "the request" if stage == "input" else "the answer"
        super().__init__(verdict.message or f"{what} was blocked by the {verdict.scanner} guard ({verdict.category})")
        self.verdict, self.stage = verdict, stage


class Guard(Protocol):
    name: str

    async def scan(self, texts: list[str], *, stage: str, tenant: str) -> GuardVerdict: ...


class GuardStage:
    def __init__(self, *, stage: str, guards: list[Guard], observer: Observer) -> None:
        if stage not in ("input", "output"):
            raise ValueError(f"a guard stage is 'input' or 'output', not {stage!r}")
        self.name = f"guard_{stage}"
        self._stage = stage
        self._guards = guards
        self._observer = observer

    @property
    def active(self) -> bool:
        """Whether any guard scans here (a trace shows the stage only then)."""
        return bool(self._guards)

    async def check(self, texts: list[str], *, tenant: str) -> None:
        for guard in self._guards:
            verdict = await guard.scan(texts, stage=self._stage, tenant=tenant)
            self._observer.guard_decision(scanner=verdict.scanner, stage=self._stage, action=verdict.action.value)
            if verdict.action is GuardAction.BLOCK:
                raise GuardBlocked(verdict, self._stage)
