"""/v1/models, /v1/chat/completions and /v1/completions: translate between OpenAI's shapes and
the gateway's TextService; no decisions are made here."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from genloom.api.callers import Caller, caller
from genloom.api.errors import api_error, sse_error
from genloom.api.schemas import VERSION_HEADER, ChatCompletionRequest, CompletionRequest
from genloom.config import ApiSettings
from genloom.gateway import TextRequest
from genloom.gateway.openai_shapes import ChatChunks, CompletionChunks
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.errors import InvalidRequest
from genloom.gateway.structured import json_grammar, response_grammar
from genloom.gateway.tools import tools_from_request
from genloom.gateway.templates import TemplateService
from genloom.guardrails.policy import layered
from genloom.jobs import ChoiceFinished, TokenEvent

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-genloom-cache": "miss"}
SEMANTIC_CACHE_HEADER = "x-genloom-semantic-cache"
SCENARIO_PREFIX = "scenario:"
log = logging.getLogger("genloom.api")


def build_text_router(pipeline: TextPipeline, templates: TemplateService, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        scenario_guardrails = None
        if body.model.startswith(SCENARIO_PREFIX):
            body, scenario_guardrails = await _through_scenario(templates, body)
        text_request = chat_request(body, settings, caller(request))
        if scenario_guardrails:
            text_request = replace(text_request, guardrails=layered(text_request.guardrails, scenario_guardrails))
        if body.stream:
            response = await stream_response(pipeline, text_request, request, ChatChunks(body.include_usage))
        else:
            response = await _answer(pipeline, text_request, request)
        return _naming_ignored(response, body.ignored_fields())

    @router.post("/completions")
    async def completions(body: CompletionRequest, request: Request):
        text_request = completion_request(body, settings, caller(request))
        if body.stream:
            response = await stream_response(pipeline, text_request, request, CompletionChunks(body.include_usage))
        else:
            response = await _answer(pipeline, text_request, request)
        return _naming_ignored(response, body.ignored_fields())

    return router


IGNORED_HEADER = "x-genloom-ignored"


def _naming_ignored(response: Response, ignored: list[str]) -> Response:
    """Fields the client sent that change nothing here are named, so nobody mistakes them for honoured."""
    if ignored:
        response.headers[IGNORED_HEADER] = ", ".join(ignored)
    return response


async def _through_scenario(
    templates: TemplateService, body: ChatCompletionRequest
) -> tuple[ChatCompletionRequest, dict[str, Any] | None]:
    """`model="scenario:NAME"`: the scenario's rendered template (its string variables from the
    request's `metadata`) goes before the client's messages, on the scenario's model and policy;
    with the scenario's guard policy overrides."""
    name = body.model.removeprefix(SCENARIO_PREFIX)
    given = {key: getattr(body, key) for key in ("max_tokens", "temperature", "top_p", "stop", "seed")}
    call = await templates.prepare_call(name, dict(body.metadata or {}), {k: v for k, v in given.items() if v is not None})
    fields = body.model_dump(exclude_none=True) | call.parameters
    fields |= {"model": call.model, "messages": [*call.messages, *(m.model_dump(exclude_none=True) for m in body.messages)]}
    fields.pop("max_completion_tokens", None)
    return ChatCompletionRequest.model_validate(fields), call.scenario.policy.get("guardrails")


async def _answer(pipeline: TextPipeline, text_request: TextRequest, request: Request) -> JSONResponse:
    no_cache = "no-cache" in request.headers.get("cache-control", "").lower()
    semantic = request.headers.get(SEMANTIC_CACHE_HEADER, "").strip().lower() in ("1", "true", "on")
    answer = await pipeline.answer(text_request, request.is_disconnected, no_cache=no_cache, semantic=semantic)
    version = answer.body.get("system_fingerprint") or answer.body["model"]
    return JSONResponse(answer.body, headers=answer.headers | {VERSION_HEADER: version})


def chat_request(body: ChatCompletionRequest, settings: ApiSettings, who: Caller) -> TextRequest:
    body.refuse_what_is_not_done()
    body.refuse_parts_for(body.model)
    max_tokens = body.requested_max_tokens()
    params = body.sampling_params(max_tokens, settings.default_max_tokens)
    tools = tools_from_request(body.tools, body.tool_choice)
    grammar = response_grammar(body.response_format)
    if tools is not None and tools.constrained:
        if grammar is not None:
            raise InvalidRequest("a required tool call and a response_format cannot both shape the answer", "tool_choice")
        grammar = json_grammar(tools.call_schema())  # the answer is a call whose arguments validate
    return TextRequest(
        id=f"chatcmpl-{uuid.uuid4().hex}",
        endpoint="/v1/chat/completions",
        model=body.model,
        params=replace(params, grammar=grammar),
        response_format=body.response_format,
        tools=tools,
        n=body.n or 1,
        messages=[m.rendered() for m in body.messages],
        max_tokens_given=max_tokens is not None,
        tier=who.tier,
        tenant=who.tenant,
        key_id=who.key_id,
        limits=who.limits,
        key_limits=who.key_limits,
        guardrails=who.guardrails,
        keep_content=who.keep_content,
        stream=bool(body.stream),
        user=body.user,
    )


def completion_request(body: CompletionRequest, settings: ApiSettings, who: Caller) -> TextRequest:
    body.refuse_what_is_not_done()
    return TextRequest(
        id=f"cmpl-{uuid.uuid4().hex}",
        endpoint="/v1/completions",
        model=body.model,
        params=body.sampling_params(body.max_tokens, settings.default_max_tokens),
        n=body.n or 1,
        prompt=body.single_prompt(),
        echo=bool(body.echo),
        max_tokens_given=body.max_tokens is not None,
        tier=who.tier,
        tenant=who.tenant,
        key_id=who.key_id,
        limits=who.limits,
        key_limits=who.key_limits,
        guardrails=who.guardrails,
        keep_content=who.keep_content,
        stream=bool(body.stream),
        user=body.user,
    )


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


async def stream_response(pipeline: TextPipeline, text_request: TextRequest, request: Request, shape: ChatChunks):
    events = pipeline.stream(text_request, request.is_disconnected)
    _, completion = await events.__anext__()  # raises before the 200 is sent: 404, 400, 503 stay HTTP errors

    async def body() -> AsyncIterator[str]:
        try:
            for index in range(text_request.n):
                opening = shape.opening(index, completion)
                if opening is not None:
                    yield _sse(shape.chunk(completion, opening))
            held = shape.held(completion)  # tools: each choice's calls are parsed from its whole text
            async for event, _ in events:
                if isinstance(event, TokenEvent) and not held:
                    yield _sse(shape.chunk(completion, shape.token(event.index, event.delta, event.logprobs)))
                elif isinstance(event, ChoiceFinished) and held:
                    for choice in shape.held_out(completion, event.index, event.finish_reason):
                        yield _sse(shape.chunk(completion, choice))
                elif isinstance(event, ChoiceFinished):
                    yield _sse(shape.chunk(completion, shape.finish(event.index, event.finish_reason)))
            if shape.include_usage:
                yield _sse(shape.chunk(completion, None, final_usage=True))
        except Exception as e:  # the status line has been sent: end the stream with an error event, never a cut
            error = api_error(e)
            if error is None:
                log.exception("stream %s failed", text_request.id)
                yield sse_error("internal server error; the request id names it in the server log")
            else:
                yield error.sse()
        finally:
            await events.aclose()
        yield "data: [DONE]\n\n"

    # The version chosen when the request was accepted; a fallback before the first token shows in the chunks.
    headers = _SSE_HEADERS | completion.rate_limit_headers | completion.guard_headers | {VERSION_HEADER: completion.model}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
