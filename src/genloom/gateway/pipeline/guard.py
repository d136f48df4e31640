"""Stages 2 and 6, guard input and guard output: the scanners a request's policy turns on read
its text (or its answer's) and flag, redact or block it.

- Input guards run before admission: a blocked request costs no tokens and no queue slot.
- Redacted input goes on with placeholders (`<EMAIL_1>`); where the policy says `restore`, the
  answer gets the values back for the same caller and they never leave the process.
- Output guards read a streamed answer in windows and hold back its newest characters until
  the text after them has been read too, so a blocked answer's offending text is never sent.
- Every hit is counted, audited, and a tenant's blocks per hour are bounded (then 429)."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from genloom.config import GuardMode, GuardrailSettings
from genloom.gateway.guard_blocks import BlockCounter, InMemoryBlockCounter, refuse_if_over
from genloom.guardrails.engine import GuardScan, Guardrails, Hit
from genloom.guardrails.pii import Placeholders, redact
from genloom.guardrails.policy import Policies, StagePolicy
from genloom.guardrails.scan import Span
from genloom.store.guard_audit import AuditEntry, GuardAudit
from genloom.telemetry import Observer

GUARD_HEADER = "x-genloom-guard"
_THREAD_ABOVE_CHARS = 8_000  # longer texts are scanned off the event loop


@dataclass(frozen=True)
class Guarded:
    """Who a scan is for: the tenant, the request, and the policy overrides that apply to it
    (the tenant's, then its scenario's) and its blocks-per-hour limit."""

    tenant: str
    request_id: str = ""
    overrides: Mapping[str, Any] | None = None
    limits: Mapping[str, Any] | None = None


class GuardBlocked(Exception):
    """A guard refused the request (400 content_blocked) or the answer (the stream's error event)."""

    def __init__(self, message: str, *, stage: str, param: str | None) -> None:
        super().__init__(message)
        self.stage, self.param = stage, param


@dataclass
class GuardResult:
    texts: list[str]  # as given, or with redacted spans replaced by placeholders
    actions: set[str] = field(default_factory=set)  # "flagged" and/or "redacted"
    placeholders: Placeholders | None = None
    restore: Placeholders | None = None  # the input's placeholders to put back into the answer (policy `restore`)



class GuardStage:
    def __init__(
        self, *, stage: str, guardrails: Guardrails, settings: GuardrailSettings, observer: Observer,
        policies: Policies | None = None, audit: GuardAudit | None = None, blocks: BlockCounter | None = None,
    ) -> None:
        if stage not in ("input", "output"):
            raise ValueError(f"a guard stage is 'input' or 'output', not {stage!r}")
        self.name = f"guard_{stage}"
        self.stage = stage
        self.guardrails = guardrails
        self.settings = settings
        self.policies = policies if policies is not None else guardrails.policies(settings)
        self._observer = observer
        self._audit = audit
        self._blocks = blocks if blocks is not None else InMemoryBlockCounter()

    def policy(self, who: Guarded) -> StagePolicy:
        return self.policies.stage(self.stage, who.overrides)

    def active(self, who: Guarded) -> bool:
        return self.policy(who).active

    async def check(
        self, texts: Sequence[str], *, who: Guarded, roles: Sequence[str | None] | None = None,
        param: str | None = "messages", placeholders: Placeholders | None = None,
    ) -> GuardResult:
        """Scan `texts` under `who`'s policy: GuardBlocked on a block (after it is counted and
        audited), else the texts to go on with. 429 first while the tenant is over its blocks."""
        policy = self.policy(who)
        result = GuardResult(list(texts), placeholders=placeholders)
        if not policy.active:
            return result
        await refuse_if_over(self._blocks, who.tenant, self._block_limit(who))
        if any(rule.action is GuardMode.REDACT for rule in policy.rules) and result.placeholders is None:
            result.placeholders = Placeholders()
        scan = await self._scan(texts, policy, roles, result.placeholders)
        self.allowed(policy, scan.hits)
        await self.settle(scan, who, original=texts, param=param)
        result.texts = scan.texts
        if scan.first(GuardMode.FLAG) is not None:
            result.actions.add("flagged")
        if scan.redacted:
            result.actions.add("redacted")
            restoring = {h.scanner for h in scan.hits if h.action is GuardMode.REDACT} & {
                r.scanner for r in policy.rules if r.restore}
            if restoring and result.placeholders is not None:
                result.restore = _restorable(result.placeholders)
        return result

    def watch(self, who: Guarded, *, choices: int, placeholders: Placeholders | None = None,
              restore: Placeholders | None = None) -> OutputWatch | None:
        """An output stage's reader of a streamed answer, or None when nothing is to be read or
        restored (then tokens pass as they come)."""
        policy = self.policy(who)
        if not policy.active and not restore:
            return None
        return OutputWatch(self, who, policy, choices=choices, placeholders=placeholders, restore=restore)

    def allowed(self, policy: StagePolicy, hits: Sequence[Hit]) -> None:
        """Count an allow for every scanner that ran and found nothing (the rate's denominator)."""
        found = {hit.scanner for hit in hits}
        for rule in policy.rules:
            if rule.scanner not in found:
                self._observer.guard_decision(scanner=rule.scanner, stage=self.stage, action="allow")

    async def settle(self, scan: GuardScan, who: Guarded, *, original: Sequence[str], param: str | None) -> None:
        """Count, audit and (on a block) raise for what a scan found."""
        if not scan.hits:
            return
        for hit in scan.hits:
            self._observer.guard_decision(scanner=hit.scanner, stage=self.stage, action=hit.action.value)
        if self._audit is not None:
            now = datetime.now(UTC)
            self._audit.record([AuditEntry(
                created_at=now, request_id=who.request_id, tenant=who.tenant, stage=self.stage, scanner=h.scanner,
                category=h.finding.category, score=round(float(h.finding.score), 4), action=h.action.value,
                spans=[{"start": s.start, "end": s.end, "label": s.label} for s in h.finding.spans],
                content=original[h.text_index] if self.settings.audit_content else None,
            ) for h in scan.hits])
        blocked = scan.first(GuardMode.BLOCK)
        if blocked is not None:
            await self._blocks.add(who.tenant)
            what = "the request" if self.stage == "input" else "the answer"
            raise GuardBlocked(
                f"{what} was blocked by the {blocked.scanner} guard ({blocked.finding.category})",
                stage=self.stage, param=param,
            )

    async def _scan(self, texts: Sequence[str], policy: StagePolicy, roles: Sequence[str | None] | None,
                    placeholders: Placeholders | None) -> GuardScan:
        if sum(len(t) for t in texts) > _THREAD_ABOVE_CHARS:
            return await asyncio.to_thread(self.guardrails.scan, texts, policy, roles=roles, placeholders=placeholders)
        return self.guardrails.scan(texts, policy, roles=roles, placeholders=placeholders)

    def _block_limit(self, who: Guarded) -> int | None:
        given = (who.limits or {}).get("guard_blocks_per_hour")
        return given if given is not None else self.settings.blocks_per_hour


class OutputWatch:
    """Reads each choice of a streamed answer as it grows: every `stream_window_chars` new
    characters the unsent text (with some already sent before it, for context) is scanned; text
    is released only up to `stream_holdback_chars` before the end, and never inside a span
    being redacted. A block raises before any of the scanned text is sent."""

    def __init__(self, stage: GuardStage, who: Guarded, policy: StagePolicy, *, choices: int,
                 placeholders: Placeholders | None, restore: Placeholders | None) -> None:
        self._stage, self._who, self._policy = stage, who, policy
        self._placeholders = placeholders if placeholders is not None else Placeholders()
        self._restorers = [restore.restorer() for _ in range(choices)] if restore is not None else None
        self._raw = [""] * choices  # what the model wrote
        self._released = [0] * choices  # raw characters sent on
        self._scanned = [0] * choices  # raw length at the last scan
        self._guarded = [""] * choices  # what was sent on, redacted (not restored)
        self._logprobs: list[list[Any]] = [[] for _ in range(choices)]  # of tokens whose text is held
        self.actions: set[str] = set()
        self._hits: list[Hit] = []
        self._seen: list[set[tuple[str, str, GuardMode]]] = [set() for _ in range(choices)]
        window = stage.settings.stream_window_chars
        self._window, self._holdback = window, stage.settings.stream_holdback_chars
        self._context = max(256, 4 * window, 2 * self._holdback)

    def guarded_text(self, index: int) -> str:
        """The choice's text as sent, before restoring (what the request log and cache keep)."""
        return self._guarded[index]

    async def feed(self, index: int, delta: str, logprobs: Sequence[Any] = ()) -> tuple[str, tuple[Any, ...]]:
        """The text to send now for `delta` (often "" while it is held back), and the
        log-probabilities of the tokens held until now with it."""
        self._raw[index] += delta
        self._logprobs[index].extend(logprobs)
        if not self._policy.active:
            text = self._restored(index, self._release(index, len(self._raw[index]), []))
        elif len(self._raw[index]) - self._scanned[index] < self._window:
            text = ""
        else:
            text = await self._advance(index, final=False)
        return text, self._take_logprobs(index) if text else ()

    async def end(self, index: int) -> tuple[str, tuple[Any, ...]]:
        """The rest of the choice's text once it is finished."""
        if not self._policy.active:
            text = self._release(index, len(self._raw[index]), [])
        else:
            text = await self._advance(index, final=True, restore_tail=False)
            self._stage.allowed(self._policy, self._hits)
        return self._restored(index, text, final=True), self._take_logprobs(index)

    def _take_logprobs(self, index: int) -> tuple[Any, ...]:
        taken = tuple(self._logprobs[index])
        self._logprobs[index].clear()
        return taken

    async def _advance(self, index: int, *, final: bool, restore_tail: bool = True) -> str:
        raw = self._raw[index]
        base = max(0, self._released[index] - self._context)
        piece = raw[base:]
        self._scanned[index] = len(raw)
        scan = await self._stage._scan([piece], self._policy, None, None)
        # Windows overlap: a finding is counted and audited once per choice, however many windows see it.
        seen = self._seen[index]
        fresh = [h for h in scan.hits if (h.scanner, h.finding.category, h.action) not in seen]
        seen.update((h.scanner, h.finding.category, h.action) for h in fresh)
        self._hits.extend(fresh)
        await self._stage.settle(GuardScan(scan.texts, fresh, scan.redacted), self._who, original=[piece], param=None)
        if scan.first(GuardMode.FLAG) is not None:
            self.actions.add("flagged")
        spans = [
            (s.start + base, s.end + base, s.label) for hit in scan.hits if hit.action is GuardMode.REDACT for s in hit.finding.spans
        ]
        if spans:
            self.actions.add("redacted")
        upto = len(raw) if final else max(self._released[index], len(raw) - self._holdback)
        for start, end, _ in spans:
            if start < upto < end:
                upto = max(self._released[index], start)
        text = self._release(index, upto, spans)
        return self._restored(index, text) if restore_tail else text

    def _release(self, index: int, upto: int, spans: list[tuple[int, int, str]]) -> str:
        start = self._released[index]
        if upto <= start:
            return ""
        raw = self._raw[index][start:upto]
        inside = [Span(s - start, e - start, label) for s, e, label in spans if s >= start and e <= upto]
        text = redact(raw, inside, self._placeholders) if inside else raw
        self._released[index] = upto
        self._guarded[index] += text
        return text

    def _restored(self, index: int, text: str, *, final: bool = False) -> str:
        if self._restorers is None:
            return text
        restorer = self._restorers[index]
        return restorer.feed(text) + (restorer.flush() if final else "")


def guard_header(*results: GuardResult | OutputWatch | None) -> dict[str, str]:
    """`x-genloom-guard: flagged, redacted` for what the guards did to a request and its answer."""
    actions = set().union(*(r.actions for r in results if r is not None))
    return {GUARD_HEADER: ", ".join(sorted(actions))} if actions else {}


def restore_body(body: dict[str, Any], restore: Callable[[str], str] | None) -> dict[str, Any]:
    """A chat completion's or completion's body with the input's placeholders restored in its
    texts by `restore` (a copy: the cached body keeps them)."""
    if restore is None:
        return body
    body = copy.deepcopy(body)
    for choice in body.get("choices", []):
        if isinstance(choice.get("text"), str):
            choice["text"] = restore(choice["text"])
        message = choice.get("message") or {}
        if isinstance(message.get("content"), str):
            message["content"] = restore(message["content"])
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            if isinstance(function.get("arguments"), str):
                function["arguments"] = restore(function["arguments"])
    return body


def _restorable(placeholders: Placeholders) -> Placeholders:
    """The input redaction's placeholders, apart: the ones output guards add later to the
    request's numbering are never restored."""
    snapshot = Placeholders()
    snapshot.originals = dict(placeholders.originals)
    return snapshot
