"""The guard stages with stand-in scanners (a word list and an email finder): the policy decides
flag, redact or block; blocks are counted, audited and bounded per hour; a streamed answer is
read in windows and nothing a block stops is ever released; redacted input is restored."""

from __future__ import annotations

import asyncio
import re

import pytest

from genloom.config import GuardrailSettings
from genloom.gateway.guard_blocks import InMemoryBlockCounter
from genloom.gateway.pipeline.guard import GuardBlocked, Guarded, GuardStage, restore_body
from genloom.gateway.rate_limit import RateLimited
from genloom.guardrails.engine import Guardrails
from genloom.guardrails.policy import PolicyError
from genloom.guardrails.scan import Finding, Span
from genloom.telemetry import RecordingObserver


class WordScanner:
    """Scores 1.0 on any text holding `word`, with its span."""

    categories = ("test",)

    def __init__(self, name: str, word: str) -> None:
        self.name, self.word = name, word

    def scan(self, text: str) -> list[Finding]:
        spans = tuple(Span(m.start(), m.end(), "WORD") for m in re.finditer(re.escape(self.word), text))
        return [Finding(self.name, "test", 1.0 if spans else 0.0, spans)]


class EmailScanner:
    name, categories = "email", ("pii",)

    def scan(self, text: str) -> list[Finding]:
        spans = tuple(Span(m.start(), m.end(), "EMAIL") for m in re.finditer(r"[\w.]+@[\w.]+\.\w+", text))
        return [Finding(self.name, "pii", 1.0 if spans else 0.0, spans)]


class RecordingAudit:
    def __init__(self) -> None:
        self.entries = []

    def record(self, entries) -> None:
        self.entries.extend(entries)


def stage(kind: str, policy: dict, *, audit=None, blocks=None, **settings) -> tuple[GuardStage, RecordingObserver]:
    observer = RecordingObserver()
    guardrails = Guardrails({"word": lambda: WordScanner("word", "bomb"), "email": EmailScanner}, redacting=["email"])
    config = GuardrailSettings.model_validate({kind: policy, **settings})
    return GuardStage(stage=kind, guardrails=guardrails, settings=config, observer=observer, audit=audit,
                      blocks=blocks), observer


WHO = Guarded(tenant="t1", request_id="req-1")


def test_nothing_on_passes_everything_and_reports_nothing():
    guard, observer = stage("input", {})
    result = asyncio.run(guard.check(["a bomb at a@b.com"], who=WHO))
    assert result.texts == ["a bomb at a@b.com"] and not result.actions and observer.calls == []


def test_a_block_is_counted_audited_and_refused():
    audit = RecordingAudit()
    guard, observer = stage("input", {"word": {"action": "block"}}, audit=audit)
    with pytest.raises(GuardBlocked) as blocked:
        asyncio.run(guard.check(["fine", "how to build a bomb"], who=WHO))
    assert "word guard (test)" in str(blocked.value) and blocked.value.param == "messages"
    assert ("guard_decision", {"scanner": "word", "stage": "input", "action": "block"}) in observer.calls
    [entry] = audit.entries
    assert (entry.tenant, entry.request_id, entry.scanner, entry.action, entry.score) == ("t1", "req-1", "word", "block", 1.0)
    assert entry.spans == [{"start": 15, "end": 19, "label": "WORD"}] and entry.content is None  # no text unless asked
    assert asyncio.run(guard.check(["a harmless request"], who=WHO)).texts == ["a harmless request"]


def test_flag_passes_with_a_record_and_redact_replaces_spans_that_can_be_restored():
    audit = RecordingAudit()
    guard, _ = stage("input", {"word": {"action": "flag"}, "email": {"action": "redact", "restore": True}},
                     audit=audit, audit_content=True)
    result = asyncio.run(guard.check(["mail a@b.com and c@d.org", "again a@b.com, bomb"], who=WHO))
    assert result.texts == ["mail <EMAIL_1> and <EMAIL_2>", "again <EMAIL_1>, bomb"]
    assert result.actions == {"flagged", "redacted"}
    assert {e.action for e in audit.entries} == {"flag", "redact"} and audit.entries[0].content is not None
    body = {"choices": [{"message": {"content": "wrote to <EMAIL_2> and <EMAIL_9>"}}]}
    assert restore_body(body, result.restore.restore)["choices"][0]["message"]["content"] == "wrote to c@d.org and <EMAIL_9>"
    assert body["choices"][0]["message"]["content"] == "wrote to <EMAIL_2> and <EMAIL_9>"  # the cached copy keeps them


def test_redaction_without_restore_keeps_the_placeholders_in_the_answer():
    guard, _ = stage("input", {"email": {"action": "redact"}})
    result = asyncio.run(guard.check(["a@b.com"], who=WHO))
    assert result.texts == ["<EMAIL_1>"] and result.restore is None


def test_tenant_and_scenario_overrides_change_only_what_they_name():
    guard, _ = stage("input", {"word": {"action": "flag", "threshold": 0.9}})
    strict = Guarded(tenant="t2", overrides={"input": {"word": {"action": "block"}}})
    with pytest.raises(GuardBlocked):
        asyncio.run(guard.check(["bomb"], who=strict))
    assert guard.policy(strict).rules[0].threshold == 0.9  # the threshold stays the config's
    off = Guarded(tenant="t3", overrides={"input": {"word": {"action": "off"}}})
    assert not guard.active(off) and asyncio.run(guard.check(["bomb"], who=off)).actions == set()


@pytest.mark.parametrize("overrides, param", [
    ({"input": {"nope": {"action": "block"}}}, "guardrails.input.nope"),
    ({"input": {"word": {"action": "redact"}}}, "guardrails.input.word.action"),
    ({"input": {"word": {"action": "shout"}}}, "guardrails.input.word.action"),
    ({"input": {"word": {"threshold": 2}}}, "guardrails.input.word.threshold"),
    ({"output": {"email": {"action": "redact", "restore": True}}}, "guardrails.output.email.restore"),
    ({"middle": {}}, "guardrails.middle"),
    ({"input": {"word": "block"}}, "guardrails.input.word"),
])
def test_bad_overrides_name_the_field(overrides, param):
    guard, _ = stage("input", {})
    with pytest.raises(PolicyError) as refused:
        guard.policies.check_overrides(overrides, "guardrails")
    assert refused.value.param == param


def test_a_tenant_over_its_blocks_per_hour_gets_429_for_everything():
    now = [7200.0]
    blocks = InMemoryBlockCounter(clock=lambda: now[0])
    guard, _ = stage("input", {"word": {"action": "block"}}, blocks=blocks, blocks_per_hour=2)
    for _ in range(2):
        with pytest.raises(GuardBlocked):
            asyncio.run(guard.check(["bomb"], who=WHO))
    with pytest.raises(RateLimited) as limited:
        asyncio.run(guard.check(["harmless"], who=WHO))
    assert limited.value.limit == "guard_blocks_per_hour" and limited.value.headers["retry-after"]
    asyncio.run(guard.check(["harmless"], who=Guarded(tenant="other")))  # another tenant is not affected
    tenant_limit = Guarded(tenant="t1", limits={"guard_blocks_per_hour": 5})
    asyncio.run(guard.check(["harmless"], who=tenant_limit))  # a tenant's own limit wins
    now[0] += 3600
    asyncio.run(guard.check(["harmless"], who=WHO))  # a new hour


def feed_all(watch, pieces: list[str]) -> tuple[list[str], BaseException | None]:
    """What a client would receive, delta by delta, until the end or a block."""
    sent: list[str] = []

    async def run():
        for piece in pieces:
            text, _ = await watch.feed(0, piece)
            sent.append(text)
        text, _ = await watch.end(0)
        sent.append(text)

    try:
        asyncio.run(run())
    except GuardBlocked as e:
        return sent, e
    return sent, None


def test_a_streamed_answer_is_stopped_before_the_blocked_word_is_sent():
    guard, _ = stage("output", {"word": {"action": "block"}}, stream_window_chars=8, stream_holdback_chars=8)
    words = "here is a long harmless opening sentence and then: how to make a bo" + "mb at home, step one"
    pieces = [words[i:i + 3] for i in range(0, len(words), 3)]
    sent, blocked = feed_all(guard.watch(WHO, choices=1), pieces)
    assert blocked is not None and blocked.stage == "output"
    released = "".join(sent)
    assert "here is a long harmless" in released and "bo" not in released.split("then:")[-1]
    assert "bomb" not in released


def test_a_streamed_answer_is_redacted_across_windows_and_input_values_restored():
    input_guard, _ = stage("input", {"email": {"action": "redact", "restore": True}})
    checked = asyncio.run(input_guard.check(["write to x@y.com"], who=WHO))
    guard, _ = stage("output", {"email": {"action": "redact"}}, stream_window_chars=4, stream_holdback_chars=12)
    watch = guard.watch(WHO, choices=1, placeholders=checked.placeholders, restore=checked.restore)
    answer = "Sure, I wrote to <EMAIL_1> and copied boss@corp.com on it."
    sent, blocked = feed_all(watch, [answer[i:i + 2] for i in range(0, len(answer), 2)])
    assert blocked is None
    assert "".join(sent) == "Sure, I wrote to x@y.com and copied <EMAIL_2> on it."  # the model's own email stays hidden
    assert watch.guarded_text(0) == "Sure, I wrote to <EMAIL_1> and copied <EMAIL_2> on it."  # what the log keeps
    assert "redacted" in watch.actions


def test_restoring_alone_passes_text_through_and_joins_split_placeholders():
    input_guard, _ = stage("input", {"email": {"action": "redact", "restore": True}})
    checked = asyncio.run(input_guard.check(["x@y.com"], who=WHO))
    guard, _ = stage("output", {})
    watch = guard.watch(WHO, choices=1, restore=checked.restore)
    sent, _ = feed_all(watch, ["hi <EM", "AIL_", "1> ok"])
    assert sent == ["hi ", "", "x@y.com ok", ""]
    assert guard.watch(WHO, choices=1) is None  # nothing to read or restore: tokens pass as they come


def test_a_conversations_earlier_turns_are_scanned_once_and_its_newest_every_time():
    scanned: list[str] = []

    class Counting(WordScanner):
        def scan(self, text: str) -> list[Finding]:
            scanned.append(text)
            return super().scan(text)

    guardrails = Guardrails({"word": lambda: Counting("word", "bomb")})
    config = GuardrailSettings.model_validate({"input": {"word": {"action": "block"}}})
    guard = GuardStage(stage="input", guardrails=guardrails, settings=config, observer=RecordingObserver())
    history = ["hello", "hi, how can I help?"]
    asyncio.run(guard.check([*history, "tell me a joke"], who=WHO))
    asyncio.run(guard.check([*history, "tell me a joke", "a joke", "another one"], who=WHO))
    asyncio.run(guard.check(["another one"], who=WHO))
    assert scanned == ["hello", "hi, how can I help?", "tell me a joke", "a joke", "another one", "another one"]
    # (the newest message is scanned every time, even when seen before: only earlier turns are looked up)
    with pytest.raises(GuardBlocked):  # what was found in a remembered turn still counts
        asyncio.run(guard.check(["a bomb", "fine"], who=WHO))
    with pytest.raises(GuardBlocked):
        asyncio.run(guard.check(["a bomb", "fine", "still fine"], who=WHO))
