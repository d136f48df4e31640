"""The request pipeline for text: named stages, each a small object with one job, run in this
order for every request, streamed or not:

    resolve → guard input → cache → admit → submit (with the fallback plan) → guard output → record

`cache` runs only for non-streaming requests, and before `admit` on purpose: a hit costs no
capacity, so it is not charged to the caller's limits. The stages are built once, in the
composition root, and passed in; the observer hears from every stage."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from genloom.gateway.events import DisconnectProbe
from genloom.gateway.openai_shapes import completion_body
from genloom.gateway.pipeline.admit import Admit
from genloom.gateway.pipeline.caching import Cache
from genloom.gateway.pipeline.call import TextCall
from genloom.gateway.pipeline.guard import GuardBlocked, GuardResult, GuardStage, OutputWatch, guard_header, restore_body
from genloom.gateway.pipeline.record import Record
from genloom.gateway.pipeline.resolve import Resolve
from genloom.gateway.pipeline.submit import Submit
from genloom.gateway.text_service import Completion, TextRequest
from genloom.jobs import ChoiceFinished, JobEvent, TokenEvent
from genloom.registry import model_name
from genloom.store import RequestStatus
from genloom.telemetry import Observer
from genloom.telemetry.logs import bind
from genloom.telemetry.tracing import NO_TRACING, Tracing, context_of, fail

__all__ = ["Answer", "CacheOutcome", "TextCall", "TextPipeline"]


class CacheOutcome(str, Enum):
    HIT = "hit"
    MISS = "miss"


@dataclass(frozen=True)
class Answer:
    body: dict[str, Any]
    cache: CacheOutcome
    headers: dict[str, str]


class TextPipeline:
    def __init__(
        self, *, resolve: Resolve, guard_input: GuardStage, cache: Cache, admit: Admit, submit: Submit,
        guard_output: GuardStage, record: Record, observer: Observer, tracing: Tracing = NO_TRACING,
    ) -> None:
        self.resolve, self.guard_input, self.cache, self.admit = resolve, guard_input, cache, admit
        self.submit, self.guard_output, self.record = submit, guard_output, record
        self._observer = observer
        self._tracing = tracing
        self.in_flight = 0  # accepted requests not finished yet (a drain waits for them)

    async def answer(
        self, request: TextRequest, disconnected: DisconnectProbe, *, no_cache: bool = False, semantic: bool = False
    ) -> Answer:
        """A non-streaming request: from the cache when it may, else generated (and cached).
        `no_cache` skips the lookups but still stores the fresh answer for the next caller."""
        call = TextCall(request)
        self._started(call)
        stage, span = self._tracing.stage, call.span
        # Stages that do nothing here (no guards, no cache) and the pure-CPU resolve get no span:
        # a span costs tens of microseconds, on every request.
        guarded_in = span if self.guard_input.active(call.who) else None
        guarded_out = span if self.guard_output.active(call.who) else None
        cached = span if self.cache.active else None
        try:
            self.resolve.run(call)
            with stage(guarded_in, "guard input"):
                await self._guard_input(call)
            with stage(cached, "cache lookup") as looked:
                hit = None if no_cache else await self.cache.lookup(call, semantic=semantic)
                if looked is not None:
                    looked.set_attribute("genloom.cache.hit", hit is not None)
            restore = call.guarded.restore.restore if call.guarded is not None and call.guarded.restore else None
            if hit is not None:
                # The answer passed the output guards of the policy it was stored under; the caller's may be stricter now.
                with stage(guarded_out, "guard output"):
                    hit, checked = await self._guard_cached(hit, call)
                call.status = RequestStatus.COMPLETED
                body = restore_body(hit | {"id": call.request.id, "created": int(call.created)}, restore)
                headers = guard_header(call.guarded, checked) | {"x-genloom-cache": CacheOutcome.HIT.value}
                self.record.cached(call, hit)
                return Answer(body, CacheOutcome.HIT, headers)
            with stage(span, "admit"):
                self.resolve.prepare(call)
                call.admission = await self.admit.charge(call.request, call.prepared)  # type: ignore[arg-type]
            with stage(span, "queue and generate"):
                async with aclosing(self.submit.run(call, disconnected)) as events:
                    async for event in events:
                        self._accepted(event)
            completion = call.completion
            assert completion is not None
            with stage(guarded_out, "guard output"):
                checked = await self.guard_output.check(
                    [c.text for c in completion.choices], who=call.who, param=None,
                    placeholders=call.guarded.placeholders if call.guarded is not None else None,
                )
            for choice, text in zip(completion.choices, checked.texts):
                choice.text = text
            body = completion_body(completion, call.request.endpoint)
            with stage(cached, "cache store"):
                await self.cache.store(call, body, semantic=semantic)  # as answered, before restoring
            headers = completion.rate_limit_headers | guard_header(call.guarded, checked) | {"x-genloom-cache": CacheOutcome.MISS.value}
            return Answer(restore_body(body, restore), CacheOutcome.MISS, headers)
        except asyncio.CancelledError:
            call.status = RequestStatus.CANCELLED
            raise
        except BaseException as e:
            fail(call.span, e)
            raise
        finally:
            await self._finish(call)

    async def complete(self, request: TextRequest, disconnected: DisconnectProbe) -> Completion:
        """Generate to the end, without the cache (warm-ups, shadow mirrors, templates)."""
        completion: Completion | None = None
        async for _, completion in self.stream(request, disconnected):
            pass
        assert completion is not None
        return completion

    async def stream(self, request: TextRequest, disconnected: DisconnectProbe) -> AsyncIterator[tuple[JobEvent | None, Completion]]:
        """Yield (event, completion so far) as tokens arrive; the first item has event None and
        comes once a queue accepted the request, so errors before it stay HTTP errors. The
        version that answered is `completion.model` (a fallback may answer for a failed one)."""
        call = TextCall(request)
        self._started(call)
        stage, span = self._tracing.stage, call.span
        guarded_in = span if self.guard_input.active(call.who) else None
        try:
            self.resolve.run(call)
            with stage(guarded_in, "guard input"):
                await self._guard_input(call)
            with stage(span, "admit"):
                self.resolve.prepare(call)
                call.admission = await self.admit.charge(call.request, call.prepared)  # type: ignore[arg-type]
            # Spans here are ended by hand, never made current: the generator yields between them.
            generating = self._tracing.child(call.span, "queue and generate")
            guarded = call.guarded
            watch = self.guard_output.watch(
                call.who, choices=call.request.n, placeholders=guarded.placeholders if guarded else None,
                restore=guarded.restore if guarded else None,
            )
            try:
                async with aclosing(self.submit.run(call, disconnected)) as events:
                    async for event in events:
                        self._accepted(event)
                        assert call.completion is not None
                        if event is None and guarded is not None:
                            call.completion.guard_headers = guard_header(guarded)
                            call.completion.restore = guarded.restore.restore if guarded.restore is not None else None
                        if watch is None:
                            yield event, call.completion
                            continue
                        for watched in await self._watched(watch, event, call.completion):
                            yield watched, call.completion
            except GuardBlocked:
                if watch is not None and call.completion is not None:  # the log keeps what was sent, not what was held
                    for choice in call.completion.choices:
                        choice.text = watch.guarded_text(choice.index)
                raise
            finally:
                if generating is not None:
                    generating.end()
            assert call.completion is not None
        except (asyncio.CancelledError, GeneratorExit):
            call.status = RequestStatus.CANCELLED
            raise
        except BaseException as e:
            fail(call.span, e)
            raise
        finally:
            await self._finish(call)

    async def _guard_cached(self, hit: dict[str, Any], call: TextCall) -> tuple[dict[str, Any], GuardResult | None]:
        """A cached body through the caller's output guards: refused, or a copy with its texts redacted."""
        if not self.guard_output.active(call.who):
            return hit, None
        hit = copy.deepcopy(hit)  # the cache's own entry stays as it was stored
        fields = [(c["message"], "content") if "message" in c else (c, "text") for c in hit.get("choices", [])]
        fields = [(holder, key) for holder, key in fields if isinstance(holder.get(key), str)]
        checked = await self.guard_output.check(
            [holder[key] for holder, key in fields], who=call.who, param=None,
            placeholders=call.guarded.placeholders if call.guarded is not None else None,
        )
        for (holder, key), text in zip(fields, checked.texts):
            holder[key] = text
        return hit, checked

    async def _guard_input(self, call: TextCall) -> None:
        param = "messages" if call.request.messages is not None else "prompt"
        call.guarded = await self.guard_input.check(call.texts(), who=call.who, roles=call.roles(), param=param)
        if call.guarded.texts != call.texts():
            call.with_texts(call.guarded.texts)

    async def _watched(self, watch: OutputWatch, event: JobEvent | None, completion: Completion) -> list[JobEvent | None]:
        """An event as the client may see it once the output guards read it: a token's text
        may be held back (its log-probabilities wait with it) and come out with a later one."""
        if isinstance(event, TokenEvent):
            text, logprobs = await watch.feed(event.index, event.delta, event.logprobs)
            return [replace(event, delta=text, logprobs=logprobs)] if text or logprobs else []
        if isinstance(event, ChoiceFinished):
            rest, logprobs = await watch.end(event.index)
            completion.choices[event.index].text = watch.guarded_text(event.index)
            tail = [TokenEvent(event.index, rest, event.completion_tokens, logprobs)] if rest or logprobs else []
            return [*tail, event]
        return [event]

    def _accepted(self, event: JobEvent | None) -> None:
        if event is None:  # a queue took it: a drain now waits for it
            self.in_flight += 1

    def _started(self, call: TextCall) -> None:
        r = call.request
        self._observer.request_started(route=r.endpoint, model=model_name(r.model), tier=r.tier.value)
        bind(model=model_name(r.model))
        if self._tracing.enabled:
            operation = "chat" if r.messages is not None else "text_completion"
            span = self._tracing.child(None, f"{operation} {model_name(r.model)}")
            if span is None or not span.is_recording():  # not sampled: no stage spans, nothing carried
                return
            p = r.params
            call.span = span
            span.set_attributes({k: v for k, v in {
                "gen_ai.operation.name": operation, "gen_ai.request.model": r.model, "gen_ai.response.id": r.id,
                "gen_ai.request.max_tokens": p.max_tokens, "gen_ai.request.temperature": p.temperature,
                "gen_ai.request.top_p": p.top_p, "gen_ai.request.seed": p.seed, "gen_ai.request.choice.count": r.n,
                "genloom.tier": r.tier.value, "genloom.tenant": r.tenant, "genloom.stream": r.stream,
            }.items() if v is not None})
            call.trace = context_of(call.span)
            if self._tracing.capture_content and call.span is not None:
                call.span.set_attribute("gen_ai.input.messages", json.dumps(r.messages if r.messages is not None else r.prompt))

    async def _finish(self, call: TextCall) -> None:
        if call.completion is not None:  # it reached the queue (or tried to)
            used = call.completion.usage.total_tokens if call.accepted else 0
            await self.admit.settle(call.admission, tokens_used=used)
            if call.accepted:
                self.in_flight -= 1
            self.record.finish(call)
        elif call.admission is not None:
            await self.admit.settle(call.admission, tokens_used=0)
        r = call.request
        version = call.completion.model if call.completion is not None else r.model
        bind(version=version)
        self._observer.request_finished(
            route=r.endpoint, model=model_name(r.model), version=version, tier=r.tier.value, status=call.status.value,
            duration_s=time.monotonic() - call.started, tenant=r.tenant,
        )
        if call.span is not None:
            self._end_span(call, version)

    def _end_span(self, call: TextCall, version: str) -> None:
        span, completion = call.span, call.completion
        span.set_attribute("gen_ai.response.model", version)
        span.set_attribute("genloom.status", call.status.value)
        if completion is not None:
            usage = completion.usage
            span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
            reasons = [c.finish_reason for c in completion.choices if c.finish_reason]
            if reasons:
                span.set_attribute("gen_ai.response.finish_reasons", reasons)
            if self._tracing.capture_content:
                span.set_attribute("gen_ai.output.messages", json.dumps([c.text for c in completion.choices]))
        if call.error and call.status is not RequestStatus.COMPLETED:
            fail(span, call.error)
        span.end()
