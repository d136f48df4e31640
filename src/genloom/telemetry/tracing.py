"""Traces: the OpenTelemetry SDK, configured by the standard `OTEL_*` environment variables and
off when none names an exporter. One trace per request across processes: the HTTP span (the
caller's W3C `traceparent` is its parent), the pipeline's stages, the wait in the queue, the
worker's generation. A job carries its trace context (`TraceContext`) inside what is queued, so
a worker in another process joins the trace of the API replica that queued it.

Span names and attributes follow the OpenTelemetry GenAI semantic conventions where they apply
(`chat {model}`, `gen_ai.request.model`, `gen_ai.usage.input_tokens`, …). Prompts and outputs
go into spans only with `telemetry.capture_content: true`.

Everything here is safe to call with tracing off: it costs a method call and a check."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from genloom.jobs import (
    ChoiceFinished,
    EmbeddingsReady,
    ImagesReady,
    Job,
    JobEvent,
    JobFailed,
    JobStarted,
    PromptCounted,
    TokenEvent,
    TraceContext,
)

log = logging.getLogger("genloom.telemetry")

_PROPAGATOR = TraceContextTextMapPropagator()
TRACE_ID_HEADER = "x-genloom-trace-id"
_EXPORTER_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def tracing_wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces: an OTLP endpoint, or an exporter named in
    `OTEL_TRACES_EXPORTER` (`otlp`, `console`); never with `OTEL_SDK_DISABLED=true`."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(environ.get(name, "").strip() for name in _EXPORTER_VARIABLES)


class Tracing:
    """The process's tracer, or nothing. `span` opens a child of the current span; `job_span`
    starts one to end by hand, on any thread, under the context a job carried (`job_trace`)."""

    def __init__(self, tracer: trace.Tracer | None = None, *, provider: Any = None, capture_content: bool = False) -> None:
        self._tracer = tracer
        self._provider = provider
        self.capture_content = capture_content

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def start(
        self, name: str, *, parent: TraceContext | None = None, start_ns: int | None = None, kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
    ) -> Span | None:
        """A span to end by hand (on any thread): a child of the context a job carried when it
        has one, else of the current span."""
        if self._tracer is None:
            return None
        ctx = extract(parent) if parent is not None else None
        return self._tracer.start_span(name, context=ctx, kind=kind, attributes=_clean(attributes), start_time=start_ns)

    def child(self, parent: Span | None, name: str, attributes: Mapping[str, Any] | None = None) -> Span | None:
        """A span to end by hand under `parent` (None: under the current span)."""
        if self._tracer is None:
            return None
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        return self._tracer.start_span(name, context=ctx, attributes=_clean(attributes))

    @contextmanager
    def stage(self, parent: Span | None, name: str) -> Iterator[Span | None]:
        """A block timed as a child span of `parent`, failed when the block raises."""
        span = self.child(parent, name) if parent is not None else None
        try:
            yield span
        except BaseException as e:
            fail(span, e)
            raise
        finally:
            if span is not None:
                span.end()

    def server_span(self, name: str, headers: Mapping[str, str], attributes: Mapping[str, Any]) -> Span | None:
        """An incoming request's span, its parent the caller's `traceparent` when it sent one."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(
            name, context=_PROPAGATOR.extract(headers), kind=SpanKind.SERVER, attributes=_clean(attributes)
        )

    def shutdown(self) -> None:
        """Send what is buffered (at exit)."""
        if self._provider is not None:
            try:
                self._provider.shutdown()
            except Exception:  # an exporter that cannot reach its collector must not stop a shutdown
                log.warning("could not flush the last spans", exc_info=True)


NO_TRACING = Tracing()


def job_trace() -> TraceContext | None:
    """The current span's context, for a job about to be queued; None without a sampled span
    (tracing off, or this request not sampled)."""
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return TraceContext(carrier["traceparent"], carrier.get("tracestate", ""), time.time_ns())


def context_of(span: Span | None) -> TraceContext | None:
    """What a job carries to join `span`'s trace; None for no span or one not sampled."""
    if span is None:
        return None
    ctx = span.get_span_context()
    if not ctx.is_valid or not ctx.trace_flags.sampled:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return TraceContext(carrier["traceparent"], carrier.get("tracestate", ""), time.time_ns())


def extract(carried: TraceContext) -> otel_context.Context:
    carrier = {"traceparent": carried.traceparent}
    if carried.tracestate:
        carrier["tracestate"] = carried.tracestate
    return _PROPAGATOR.extract(carrier)


def setup_tracing(*, service: str, capture_content: bool = False, environ: Mapping[str, str] = os.environ) -> Tracing:
    """The tracer the environment asks for, exporting in batches off the request path; NO_TRACING
    when it asks for none. `service` names the process when `OTEL_SERVICE_NAME` does not."""
    if not tracing_wanted(environ):
        return NO_TRACING
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    from genloom import __version__

    attributes = {"service.version": __version__}
    if not environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = service
    provider = TracerProvider(resource=Resource.create(attributes))  # the sampler: OTEL_TRACES_SAMPLER
    exporters = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",") if e.strip()]
    for name in exporters:
        if name == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # endpoint, headers: OTEL_EXPORTER_OTLP_*
        else:
            log.warning("OTEL_TRACES_EXPORTER=%s is not supported here (otlp, console); ignored", name)
    log.info("tracing on: %s", ", ".join(exporters))
    return Tracing(provider.get_tracer("genloom", __version__), provider=provider, capture_content=capture_content)


def trace_id_of(span: Span | None) -> str | None:
    if span is None:
        return None
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


@contextmanager
def current(span: Span | None) -> Iterator[None]:
    """Make `span` the current one while the block runs (children started inside join it)."""
    if span is None:
        yield
        return
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        yield
    finally:
        otel_context.detach(token)


def fail(span: Span | None, error: BaseException | str) -> None:
    """Mark a span as failed."""
    if span is None or isinstance(span, NonRecordingSpan):
        return
    if isinstance(error, BaseException):
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"[:200]))
    else:
        span.set_status(Status(StatusCode.ERROR, error[:200]))


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """OpenTelemetry takes str, bool, int, float and sequences of them; None values are left out."""
    if not attributes:
        return None
    return {k: v for k, v in attributes.items() if v is not None}


class _JobSpans:
    """A taken job's spans, ended from the events it emits (on the worker's thread): the wait in
    the queue (from when it was queued to its start), then its generation (to its last event)."""

    def __init__(self, tracing: Tracing, job: Job, *, model: str, kind: str, batch_size: int | None) -> None:
        assert job.trace is not None
        self._tracing, self._job, self._model, self._kind, self._batch_size = tracing, job, model, kind, batch_size
        self._emit = job.emit
        self._generation: Span | None = None
        self._open_choices = getattr(job.payload, "n", 1) if kind in ("text", "remote") else 1
        self._tokens = 0
        self._first = True
        self._lock = threading.Lock()
        self._ended = False

    def emit(self, event: JobEvent) -> None:
        try:
            self._observe(event)
        except Exception:  # tracing must never cost a client its answer
            log.warning("tracing job %s failed", self._job.id, exc_info=True)
        self._emit(event)

    def _observe(self, event: JobEvent) -> None:
        job = self._job
        if isinstance(event, JobStarted):
            now = time.time_ns()
            assert job.trace is not None
            waited = self._tracing.start(
                f"queue wait {self._model}", parent=job.trace, start_ns=job.trace.queued_ns or now,
                attributes={"genloom.queue.class": job.request_class.value, "genloom.tier": job.tier.value,
                            "genloom.job.id": job.id, "genloom.job.deliveries": job.deliveries},
            )
            if waited is not None:
                waited.end(end_time=now)
            self._generation = self._tracing.start(
                f"{_OPERATIONS.get(self._kind, 'generate')} {self._model}", parent=job.trace, start_ns=now,
                attributes={
                    "gen_ai.operation.name": _OPERATIONS.get(self._kind), "gen_ai.request.model": self._model,
                    "gen_ai.response.id": job.id, "genloom.worker.kind": self._kind, "genloom.batch.size": self._batch_size,
                    "genloom.queue.class": job.request_class.value,
                },
            )
            return
        if isinstance(event, TokenEvent):
            if self._first and self._generation is not None:
                self._generation.add_event("first_token")
                self._first = False
            return
        if isinstance(event, ChoiceFinished):
            self._tokens += event.completion_tokens
            self._open_choices -= 1
            if self._open_choices <= 0:
                self._end(None, {"gen_ai.usage.output_tokens": self._tokens, "gen_ai.response.finish_reasons": [event.finish_reason]})
            return
        if isinstance(event, JobFailed):
            self._end(event.message, {"genloom.retryable": event.retryable})
            return
        if isinstance(event, ImagesReady):
            self._end(None, {"genloom.images": len(event.pngs)})
        elif isinstance(event, EmbeddingsReady):
            self._end(None, {"gen_ai.usage.input_tokens": sum(event.token_counts)})
        elif isinstance(event, PromptCounted):
            if self._generation is not None:
                self._generation.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)

    def cancelled(self) -> None:
        self._end("cancelled", {})

    def _end(self, error: str | None, attributes: dict[str, Any]) -> None:
        with self._lock:
            if self._ended:
                return
            self._ended = True
        span = self._generation
        if span is None:
            return
        for key, value in attributes.items():
            span.set_attribute(key, value)
        if error is not None:
            fail(span, error)
        span.end()


_OPERATIONS = {"text": "text_completion", "remote": "chat", "image": "generate_content", "embedding": "embeddings"}


def trace_job(tracing: Tracing, job: Job, *, model: str, kind: str, batch_size: int | None = None) -> None:
    """Follow a job a worker took (its `emit` is wrapped) when it carries a trace and tracing is on."""
    if not tracing.enabled or job.trace is None:
        return
    spans = _JobSpans(tracing, job, model=model, kind=kind, batch_size=batch_size)
    job.emit = spans.emit
    job.on_cancel(spans.cancelled)
