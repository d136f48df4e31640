"""Run the scanners a stage's policy turns on over a request's (or an answer's) texts, and say
what follows: the findings at or above their thresholds, the strongest action among them, and
the texts with the redacting scanners' spans replaced by placeholders."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from genloom.config import GuardMode, GuardrailSettings
from genloom.guardrails.pii import Placeholders, redact
from genloom.guardrails.policy import Policies, Rule, StagePolicy, severity
from genloom.guardrails.scan import Finding, Scanner, Span

# Instructions in the operator's system prompt or the model's own earlier turns are not an
# injection: the injection scanner reads what callers and tools bring in.
_INJECTION_ROLES = frozenset({"user", "tool", "function", None})
DEFAULT_THRESHOLD = 0.5
_REMEMBERED = 4096  # findings kept for texts seen as earlier turns


@dataclass(frozen=True)
class Hit:
    """A finding at or above its threshold, and what the policy does about it."""

    finding: Finding
    action: GuardMode
    threshold: float
    text_index: int  # which of the scanned texts

    @property
    def scanner(self) -> str:
        return self.finding.scanner


@dataclass
class GuardScan:
    texts: list[str]  # as scanned, or redacted where a redacting scanner found spans
    hits: list[Hit] = field(default_factory=list)
    redacted: bool = False

    @property
    def action(self) -> GuardMode:
        """The strongest action of any hit (off when nothing was found)."""
        strongest = GuardMode.OFF
        for hit in self.hits:
            if severity(hit.action) > severity(strongest):
                strongest = hit.action
        return strongest

    def first(self, action: GuardMode) -> Hit | None:
        """The highest-scoring hit with this action."""
        hits = [h for h in self.hits if h.action is action]
        return max(hits, key=lambda h: h.finding.score) if hits else None


class Guardrails:
    """The scanners by name, each built on first use (the classifiers load their weights then)."""

    def __init__(self, factories: Mapping[str, Callable[[], Scanner]], *, redacting: Iterable[str] = ()) -> None:
        self._factories = dict(factories)
        self._built: dict[str, Scanner] = {}
        self.redacting = frozenset(redacting)  # the scanners whose spans a policy may redact
        # Findings on earlier turns of a conversation, which a chat sends again with every turn.
        self._remembered: dict[tuple[str, int, int], list[Finding]] = {}
        self._remembering = threading.Lock()

    def with_scanners(self, factories: Mapping[str, Callable[[], Scanner]], *, redacting: Iterable[str] = ()) -> Guardrails:
        """These plus more scanners (a deployment's own, or a test's)."""
        return Guardrails(self._factories | dict(factories), redacting=self.redacting | frozenset(redacting))

    def policies(self, settings: GuardrailSettings) -> Policies:
        return Policies(settings, scanners=self._factories, redacting=self.redacting)

    @property
    def names(self) -> list[str]:
        return sorted(self._factories)

    def warm(self) -> None:
        """Build every scanner now (their weights load once, before the first request needs them)."""
        for name in self.names:
            self.scanner(name)

    def scanner(self, name: str) -> Scanner:
        built = self._built.get(name)
        if built is None:
            built = self._built[name] = self._factories[name]()
        return built

    def scan(
        self, texts: Sequence[str], policy: StagePolicy, *, roles: Sequence[str | None] | None = None,
        placeholders: Placeholders | None = None,
    ) -> GuardScan:
        """Every rule of `policy` over every text. Redacting rules replace their spans with
        `placeholders` (one numbering for the whole request); without them the texts stay as
        given and the hits say what to redact. The last text is always scanned;
        the ones before it (a conversation's earlier turns) are looked up among the texts scanned
        before, so a chat's history is not scanned again on every turn."""
        result = GuardScan(texts=list(texts))
        if not policy.active:
            return result
        for index, text in enumerate(texts):
            if not text:
                continue
            role = roles[index] if roles is not None else None
            spans: list[Span] = []
            for rule in policy.rules:
                if rule.scanner == "prompt_injection" and role not in _INJECTION_ROLES:
                    continue
                for hit in self._hits(rule, text, index, recall=index < len(texts) - 1):
                    result.hits.append(hit)
                    if hit.action is GuardMode.REDACT:
                        spans.extend(hit.finding.spans)
            if spans:
                result.redacted = True
                if placeholders is not None:
                    result.texts[index] = redact(text, spans, placeholders)
        return result

    def _findings(self, name: str, text: str, recall: bool) -> list[Finding]:
        """The scanner's findings on `text`: scanned now, or (`recall`) as found before; either
        way remembered for the next turn."""
        key = (name, len(text), hash(text))  # str hashes are keyed per process: not forgeable by callers
        found = None
        if recall:
            with self._remembering:
                found = self._remembered.get(key)
        if found is None:
            found = self.scanner(name).scan(text)
            with self._remembering:
                if len(self._remembered) >= _REMEMBERED:
                    del self._remembered[next(iter(self._remembered))]  # the oldest first
                self._remembered[key] = found
        return found

    def moderate(self, text: str) -> list[Finding]:
        """Every scanner's every finding, scores kept even when low (POST /v1/moderations)."""
        findings: list[Finding] = []
        for name in self.names:
            findings.extend(self.scanner(name).scan(text))
        return findings

    def threshold(self, name: str, category: str) -> float:
        calibrated = getattr(self.scanner(name), "thresholds", None) or {}
        return float(calibrated.get(category, DEFAULT_THRESHOLD))

    def _hits(self, rule: Rule, text: str, index: int, *, recall: bool) -> list[Hit]:
        hits = []
        for finding in self._findings(rule.scanner, text, recall):
            threshold = rule.threshold if rule.threshold is not None else self.threshold(rule.scanner, finding.category)
            if finding.score >= threshold and (finding.score > 0 or threshold > 0):
                hits.append(Hit(finding, rule.action, threshold, index))
        return hits


def builtin_guardrails() -> Guardrails:
    """The scanners that ship with Genloom."""

    def injection() -> Scanner:
        from genloom.guardrails.injection import InjectionScanner

        return InjectionScanner()

    def pii() -> Scanner:
        from genloom.guardrails.pii import PiiScanner

        return PiiScanner()

    def secrets() -> Scanner:
        from genloom.guardrails.secrets import SecretsScanner

        return SecretsScanner()

    def unsafe() -> Scanner:
        from genloom.guardrails.unsafe import UnsafeScanner

        return UnsafeScanner()

    return Guardrails({"prompt_injection": injection, "pii": pii, "secrets": secrets, "unsafe": unsafe},
                      redacting=("pii", "secrets"))
