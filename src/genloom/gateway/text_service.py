"""Text generation as the API sees it: validate, queue, stream events back, record the outcome."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from genloom.config import ApiSettings, ClassificationSettings
from genloom.gateway.errors import InvalidRequest, ModelNotFound, NotReady
from genloom.gateway.queue_io import queue_call
from genloom.gateway.readiness import Readiness
from genloom.gateway.routing import Router
from genloom.gateway.versions import not_loaded
from genloom.jobs import (
    ChoiceFinished,
    JobEvent,
    PromptCounted,
    RemoteTask,
    SamplingParams,
    TextTask,
    Tier,
    TokenEvent,
    TokenLogprob,
)
from genloom.queue.protocol import JobQueue
from genloom.gateway.tools import Tools, native_messages, render_history
from genloom.registry import UnknownModel
from genloom.registry.catalog import Resolution
from genloom.registry.registry import ModelRegistry
from genloom.runtimes.text import PromptError, TextRuntime



@dataclass(frozen=True)
class TextRequest:
    """A validated generation request. `messages` for chat, `prompt` for completions."""

    endpoint: str
    model: str
    params: SamplingParams
    n: int = 1
    messages: list[dict[str, Any]] | None = None
    prompt: str | None = None
    max_tokens_given: bool = True
    tier: Tier = Tier.FREE
    tenant: str = "default"
    key_id: str | None = None  # the API key charged for it; None when auth is disabled
    limits: dict[str, int] = field(default_factory=dict)  # the tenant's rate limits and quotas
    key_limits: dict[str, int] = field(default_factory=dict)  # the API key's own
    stream: bool = False  # the client reads tokens as they come (a remote model is then streamed too)
    user: str | None = None  # OpenAI's `user`: what a rollout sticky by user hashes
    resolution: Resolution | None = None  # set by `route`: the version, and the rollout arm if any
    background: bool = False  # queued as async work (a shadow mirror): it never delays realtime requests
    echo: bool = False  # completions: the answer's text starts with the prompt
    response_format: dict[str, Any] | None = None  # as sent (a remote model gets it; a local one: params.grammar)
    tools: Tools | None = None  # the functions the model may call (chat)
    guardrails: dict[str, Any] = field(default_factory=dict)  # guard policy overrides: the tenant's, then a scenario's
    keep_content: bool = True  # False: the request log keeps no prompt or answer (the tenant opted out)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready form, so a stored job can be run again without the API layer."""
        params = asdict(self.params) | {"stop": list(self.params.stop)}
        return {
            "endpoint": self.endpoint, "model": self.model, "params": params, "n": self.n,
            "messages": self.messages, "prompt": self.prompt, "max_tokens_given": self.max_tokens_given, "echo": self.echo,
            "response_format": self.response_format, "tools": self.tools.to_record() if self.tools else None,
            "guardrails": self.guardrails,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], *, id: str, tier: Tier, tenant: str) -> TextRequest:
        stored = record["params"]
        params = dict(stored) | {  # JSON has lists where the params hold tuples
            "stop": tuple(stored["stop"]), "logit_bias": tuple(tuple(pair) for pair in stored.get("logit_bias", ())),
            "stop_token_ids": tuple(stored.get("stop_token_ids", ())),
        }
        return cls(
            endpoint=record["endpoint"], model=record["model"], params=SamplingParams(**params), n=record["n"],
            messages=record["messages"], prompt=record["prompt"], max_tokens_given=record["max_tokens_given"],
            echo=record.get("echo", False), response_format=record.get("response_format"),
            tools=Tools.from_record(record.get("tools")), guardrails=record.get("guardrails") or {}, tier=tier,
            tenant=tenant, id=id,
        )


@dataclass(frozen=True)
class PreparedText:
    """A request checked against one model: what to queue for it and what it may cost."""

    model: str
    params: SamplingParams
    prompt_tokens: int  # counted by a local model's tokenizer; estimated for a remote one
    payload: TextTask | RemoteTask
    prompt_ids: list[int] = field(default_factory=list)  # local models only
    tool_parser: str = "hermes"  # how this version's tool calls are read from its answer


@dataclass(frozen=True)
class RemoteModel:
    """A model served by a remote OpenAI-compatible upstream (its worker holds the connection)."""

    name: str
    max_context: int
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def info(self) -> RemoteModel:  # the same card fields as a local runtime's info
        return self

    parameters = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Choice:
    index: int
    text: str = ""
    tokens: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # when the request asked for them


@dataclass
class Completion:
    id: str
    model: str
    created: int
    choices: list[Choice]
    prompt_tokens: int
    rate_limit_headers: dict[str, str] = field(default_factory=dict)
    guard_headers: dict[str, str] = field(default_factory=dict)  # what the input guards did (x-genloom-guard)
    restore: Callable[[str], str] | None = None  # puts redacted input values back (a held choice's whole text)
    logprobs: bool = False  # the request asked for them: the answer carries them (maybe none)
    top_logprobs: int = 0
    echo: str = ""  # completions with `echo`: the prompt, which every choice's text starts with
    tools: Tools | None = None  # chat with tools: each choice's text is parsed for calls at the end

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, sum(c.tokens for c in self.choices))

    def apply(self, event: JobEvent) -> bool:
        """Fold one worker event into the answer; True when it finished a choice. The one place
        events become text, for realtime requests and async jobs alike."""
        if isinstance(event, PromptCounted):
            self.prompt_tokens = event.prompt_tokens
            return False
        if not isinstance(event, (TokenEvent, ChoiceFinished)):
            return False
        choice = self.choices[event.index]
        choice.tokens = event.completion_tokens
        if isinstance(event, TokenEvent):
            choice.text += event.delta
            choice.logprobs.extend(event.logprobs)
            return False
        choice.finish_reason = event.finish_reason
        return True


class TextService:
    """What the gateway knows about text models: which version a request runs on (`route`),
    whether it fits that version (`prepare`), and what it costs the scheduler. The request path
    itself is `gateway.pipeline.TextPipeline`."""

    def __init__(
        self,
        *,
        runtimes: dict[str, TextRuntime],
        queue: JobQueue,
        readiness: Readiness,
        settings: ApiSettings,
        classification: ClassificationSettings,
        max_batch_size: int,
        remotes: dict[str, RemoteModel] | None = None,
        fallbacks: dict[str, list[str]] | None = None,
        router: Router | None = None,
        registry: ModelRegistry | None = None,
    ) -> None:
        self._router = router
        self._registry = registry
        self.model_rows: dict[str, int] = {}  # the most rows (choices) a job may take, per model
        self._runtimes = runtimes
        self._remotes = remotes if remotes is not None else {}
        self.fallbacks: dict[str, list[str]] = fallbacks if fallbacks is not None else {}
        self.tool_parsers: dict[str, str] = {}  # version -> how its tool calls are read (default hermes)
        self._classification = classification
        self._queue = queue
        self._readiness = readiness
        self._settings = settings
        self._max_batch_size = max_batch_size

    async def queued(self) -> int:
        """Requests and jobs waiting, for every model (the whole shared line when scaled out)."""
        return await queue_call(self._queue, self._queue.depth)

    def route(self, request: TextRequest) -> TextRequest:
        """The request with its model resolved to the version that serves it: an alias or a
        tiered route becomes a model name, and the registry picks its version (and rollout arm)."""
        if request.resolution is not None:
            return request
        if self._router is not None and request.model in self._router.names():
            prompt = json.dumps(request.messages) if request.messages is not None else (request.prompt or "")
            route = self._router.route(request.model, prompt=prompt, max_tokens=request.params.max_tokens)
            request = replace(request, model=route.model)
        if self._registry is None:
            return request
        try:
            resolution = self._registry.catalog.resolve(
                request.model, request_id=request.id, user=request.user, tenant=request.tenant
            )
        except UnknownModel as e:
            raise ModelNotFound(request.model, self._registry.catalog.names()) from e
        if resolution.stable and resolution.key not in self._runtimes and resolution.key not in self._remotes:
            resolution = Resolution(resolution.stable, resolution.name)  # the candidate is not loaded here yet
        return replace(request, model=resolution.key, resolution=resolution)

    def served(self, ref: str) -> str:
        """The version a fallback named by `ref` runs on now (unknown names stay, and fail in prepare)."""
        if self._registry is None:
            return ref
        try:
            return self._registry.catalog.version(ref).key
        except UnknownModel:
            return ref

    def chain(self, model: str) -> list[str]:
        """The model, then its fallbacks, in the order they are asked."""
        return [model, *(self.served(f) for f in self.fallbacks.get(model, []))]

    def cost(self, prepared: PreparedText, n: int) -> float:
        """What the scheduler charges a tenant for this request: prompt and completion tokens."""
        c = self._classification
        return max(1.0, n * (prepared.prompt_tokens * c.prompt_token_cost + prepared.params.max_tokens * c.completion_token_cost))

    def check_model(self, model: str, *, accepted: bool = False) -> None:
        """503 while not ready (unless the work was `accepted` before: a job queued again), 404
        for a model this server does not serve; nothing more costly."""
        if not accepted and not self._readiness.ready:
            raise NotReady(f"the server is not ready: {self._readiness.reason}")
        if model not in self._runtimes and model not in self._remotes:
            if self._registry is not None and model in self._registry.catalog.versions:
                raise not_loaded(self._registry, model)
            known = self._registry.catalog.names() if self._registry is not None else sorted([*self._runtimes, *self._remotes])
            raise ModelNotFound(model, known)

    def prepare(self, request: TextRequest, *, accepted: bool = False) -> PreparedText:
        """Check a request against its model: 404 for an unknown model, 400 for what cannot fit.
        `accepted`: a stored job queued again, which a draining server still puts back."""
        self.check_model(request.model, accepted=accepted)
        runtime = self._runtimes.get(request.model)
        # A job needing more rows than its model ever frees would wait at the head of its queue forever.
        rows = self.model_rows.get(request.model, self._max_batch_size)
        limit = min(self._settings.max_n, rows)
        if request.n > limit:
            raise InvalidRequest(f"n must be at most {limit} for model {request.model}", param="n")
        if runtime is not None:
            return self._prepare_local(request, runtime)
        return self._prepare_remote(request, self._remotes[request.model])

    def _prepare_local(self, request: TextRequest, runtime: TextRuntime) -> PreparedText:
        try:
            if request.messages is not None and request.tools is not None and runtime.takes_tools:
                prompt_ids = runtime.encode_chat(native_messages(request.messages), tools=[t.openai() for t in request.tools.specs])
            elif request.messages is not None:
                prompt_ids = runtime.encode_chat(render_history(request.messages, request.tools))
            else:
                prompt_ids = runtime.encode_completion(request.prompt or "")
        except PromptError as e:
            raise InvalidRequest(str(e), param="messages" if request.messages is not None else "prompt") from e
        params = self._fit(request, runtime.name, runtime.max_context, len(prompt_ids))
        for token_id in (*(i for i, _ in params.logit_bias), *params.stop_token_ids):
            if token_id >= runtime.vocab_size:
                param = "logit_bias" if any(i == token_id for i, _ in params.logit_bias) else "stop_token_ids"
                raise InvalidRequest(f"token id {token_id} is not in model {runtime.name}'s vocabulary "
                                     f"(ids 0 to {runtime.vocab_size - 1})", param=param)
        task = TextTask(prompt_ids=tuple(prompt_ids), params=params, n=request.n)
        return PreparedText(runtime.name, params, len(prompt_ids), task, prompt_ids, self.tool_parsers.get(runtime.name, "hermes"))

    def _prepare_remote(self, request: TextRequest, remote: RemoteModel) -> PreparedText:
        text = json.dumps(request.messages) if request.messages is not None else (request.prompt or "")
        prompt_tokens = len(text) // 4 + 1  # an estimate for limits and scheduling; the upstream counts exactly
        params = self._fit(request, remote.name, remote.max_context, prompt_tokens)
        body: dict[str, Any] = {
            "max_tokens": params.max_tokens, "temperature": params.temperature, "top_p": params.top_p, "n": request.n,
            "stream_options": {"include_usage": True},
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.seed is not None:
            body["seed"] = params.seed
        if params.logprobs:
            raise InvalidRequest(f"logprobs are not available from remote model {remote.name} yet", param="logprobs")
        if request.tools is not None:
            raise InvalidRequest(f"tools are not relayed to remote model {remote.name} yet", param="tools")
        # The logit controls go to the upstream as they came (the vLLM extensions only when set).
        for name, value, default in (
            ("presence_penalty", params.presence_penalty, 0.0), ("frequency_penalty", params.frequency_penalty, 0.0),
            ("repetition_penalty", params.repetition_penalty, 1.0), ("min_tokens", params.min_tokens, 0),
        ):
            if value != default:
                body[name] = value
        if params.logit_bias:
            body["logit_bias"] = {str(i): b for i, b in params.logit_bias}
        if request.response_format is not None:
            body["response_format"] = request.response_format  # the upstream enforces it its own way
        if params.stop_token_ids:
            body["stop_token_ids"] = list(params.stop_token_ids)
        if request.messages is not None:
            task = RemoteTask(path="/chat/completions", body=body | {"messages": request.messages}, stream=request.stream)
        else:
            task = RemoteTask(path="/completions", body=body | {"prompt": request.prompt or ""}, stream=request.stream)
        return PreparedText(remote.name, params, prompt_tokens, task)

    def _fit(self, request: TextRequest, model: str, max_context: int, prompt_tokens: int) -> SamplingParams:
        room = max_context - prompt_tokens
        params = request.params
        if not request.max_tokens_given:
            return replace(params, max_tokens=max(1, min(self._settings.default_max_tokens, room)))
        if params.max_tokens > room:
            raise InvalidRequest(
                f"the prompt has {prompt_tokens} tokens and max_tokens is {params.max_tokens}, but model "
                f"{model} takes at most {max_context} tokens in all; lower max_tokens to {room} or less",
                param="max_tokens",
            )
        return params
