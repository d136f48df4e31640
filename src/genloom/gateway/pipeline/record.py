"""Stage 7, record: the request log entry (prompt, output, version, timings, outcome), the
rollout's outcome for its arm, a shadow mirror when the request was picked for one, and the
observer's `request_finished`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from genloom.gateway.pipeline.call import TextCall
from genloom.gateway.text_service import Completion, TextRequest
from genloom.registry.catalog import Resolution
from genloom.registry.rollout import Outcome
from genloom.store import RequestEntry, RequestLog, RequestStatus
from genloom.store.usage import UsageSeries
from genloom.registry import model_name
from genloom.telemetry import Observer
from genloom.telemetry.monitors import Monitors

RolloutOutcome = Callable[[Resolution, Outcome], None]
ShadowMirror = Callable[[TextRequest, Completion], None]


class Record:
    name = "record"

    def __init__(self, *, request_log: RequestLog, observer: Observer, monitors: Monitors | None = None,
                 keep_content: bool = True, usage: UsageSeries | None = None) -> None:
        """Without `keep_content` (feedback.keep_content_days: 0) no prompt or answer is written.
        `usage`: the rolling series the console charts (every request that ended, cache hits too)."""
        self._log = request_log
        self._usage = usage
        self._keep_content = keep_content
        self._observer = observer
        self._monitors = monitors
        self.on_rollout_outcome: RolloutOutcome | None = None  # set by whoever runs rollouts
        self.on_shadow: ShadowMirror | None = None

    def finish(self, call: TextCall) -> None:
        """Called once per submitted request, however it ended."""
        completion = call.completion
        assert completion is not None and call.prepared is not None
        now = time.monotonic()
        request = call.request
        params: dict[str, Any] = asdict(call.prepared.params) | {"n": request.n, "stop": list(call.prepared.params.stop)}
        keep = request.keep_content and self._keep_content
        self._log.record(RequestEntry(
            id=request.id, endpoint=request.endpoint, model=request.model, params=params,
            prompt=(request.messages if request.messages is not None else request.prompt) if keep else None,
            output=[c.text for c in completion.choices] if keep else None, prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.usage.completion_tokens, latency_ms=round((now - call.started) * 1000, 3),
            ttft_ms=round((call.first_token_at - call.started) * 1000, 3) if call.first_token_at else None,
            status=call.status, error=call.error, created_at=datetime.fromtimestamp(call.created, UTC),
            finished_at=datetime.now(UTC), tenant=request.tenant, user=request.user, version=completion.model or None,
        ))
        self._observer.tokens(model=completion.model, prompt=completion.prompt_tokens,
                              completion=completion.usage.completion_tokens)
        if self._usage is not None and not call.client_fault and call.status is not RequestStatus.CANCELLED:
            self._usage.request(
                model=model_name(request.model), tenant=request.tenant, ok=call.status is RequestStatus.COMPLETED,
                latency_ms=(now - call.started) * 1000,
                ttft_ms=(call.first_token_at - call.started) * 1000 if call.first_token_at else None,
                prompt_tokens=completion.prompt_tokens, completion_tokens=completion.usage.completion_tokens)
        per_choice = completion.usage.completion_tokens / max(1, request.n)
        if call.first_token_at is not None and per_choice > 1:
            self._observer.time_per_output_token(model=completion.model, seconds=(now - call.first_token_at) / (per_choice - 1))
        if call.accepted and not call.client_fault:
            self._rollout_outcome(call, now)
            if self._monitors is not None and call.status in (RequestStatus.COMPLETED, RequestStatus.FAILED):
                self._monitors.observe(
                    model=model_name(request.model), version=completion.model, prompt="\n".join(call.texts()),
                    outputs=[c.text for c in completion.choices], finish_reasons=[c.finish_reason for c in completion.choices],
                    tokens=completion.usage.completion_tokens, ok=call.status is RequestStatus.COMPLETED,
                )
        resolution = request.resolution
        if resolution and resolution.shadow and call.status is RequestStatus.COMPLETED and self.on_shadow is not None:
            self.on_shadow(request, completion)  # runs on its own; this answer does not wait for it

    def cached(self, call: TextCall, body: dict[str, Any]) -> None:
        """A request answered from the cache is logged too (as answered, with `cache: hit` in its
        params), so it can be found, rated and forgotten like any other."""
        request = call.request
        keep = request.keep_content and self._keep_content
        choices = body.get("choices") or []
        outputs = [c.get("text") if "text" in c else (c.get("message") or {}).get("content") or "" for c in choices]
        usage = body.get("usage") or {}
        if self._usage is not None:
            self._usage.request(model=model_name(request.model), tenant=request.tenant, ok=True,
                                latency_ms=(time.monotonic() - call.started) * 1000, prompt_tokens=usage.get("prompt_tokens"),
                                completion_tokens=usage.get("completion_tokens"), cached=True)
        self._log.record(RequestEntry(
            id=request.id, endpoint=request.endpoint, model=request.model,
            params=asdict(request.params) | {"n": request.n, "stop": list(request.params.stop), "cache": "hit"},
            prompt=(request.messages if request.messages is not None else request.prompt) if keep else None,
            output=outputs if keep else None, prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"), latency_ms=round((time.monotonic() - call.started) * 1000, 3),
            status=RequestStatus.COMPLETED, created_at=datetime.fromtimestamp(call.created, UTC), finished_at=datetime.now(UTC),
            tenant=request.tenant, user=request.user, version=body.get("system_fingerprint") or body.get("model"),
        ))

    def _rollout_outcome(self, call: TextCall, now: float) -> None:
        """Tell the rollout how its arm did: the candidate failed when another version answered."""
        r, completion = call.request.resolution, call.completion
        if r is None or r.rollout is None or r.arm is None or self.on_rollout_outcome is None or completion is None:
            return
        if call.status not in (RequestStatus.COMPLETED, RequestStatus.FAILED):
            return  # cancelled or aborted: says nothing about the version
        self.on_rollout_outcome(r, Outcome(
            arm=r.arm, ok=call.status is RequestStatus.COMPLETED and completion.model == r.key,
            latency_ms=(now - call.started) * 1000,
            ttft_ms=(call.first_token_at - call.started) * 1000 if call.first_token_at else None,
            at=time.time(), output_chars=sum(len(c.text) for c in completion.choices),
        ))
