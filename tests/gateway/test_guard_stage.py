"""The guard stages' seam: every guard's verdict is reported, and a block stops the request."""

from __future__ import annotations

import asyncio

import pytest

from genloom.gateway.pipeline.guard import GuardAction, GuardBlocked, GuardStage, GuardVerdict
from genloom.telemetry import RecordingObserver


class KeywordGuard:
    """Blocks any text holding `word` (a stand-in for the scanners of the guardrails issue)."""

    name = "keyword"

    def __init__(self, word: str) -> None:
        self.word = word

    async def scan(self, texts: list[str], *, stage: str, tenant: str) -> GuardVerdict:
        if any(self.word in t for t in texts):
            return GuardVerdict(self.name, GuardAction.BLOCK, category="test", score=1.0)
        return GuardVerdict(self.name, GuardAction.ALLOW)


def test_no_guards_pass_everything_and_report_nothing():
    observer = RecordingObserver()
    asyncio.run(GuardStage(stage="input", guards=[], observer=observer).check(["anything"], tenant="t"))
    assert observer.calls == []


def test_a_blocking_verdict_stops_the_request_and_every_verdict_is_reported():
    observer = RecordingObserver()
    stage = GuardStage(stage="output", guards=[KeywordGuard("secret")], observer=observer)
    asyncio.run(stage.check(["harmless"], tenant="t"))
    with pytest.raises(GuardBlocked) as blocked:
        asyncio.run(stage.check(["a secret"], tenant="t"))
    assert blocked.value.stage == "output" and "keyword" in str(blocked.value)
    assert [c["action"] for c in observer.named("guard_decision")] == ["allow", "block"]


def test_a_stage_is_input_or_output():
    with pytest.raises(ValueError):
        GuardStage(stage="middle", guards=[], observer=RecordingObserver())
