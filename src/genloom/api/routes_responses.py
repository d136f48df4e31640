"""/v1/responses: OpenAI's Responses API on the text pipeline (the translation is
gateway/responses.py). Create (plain or streamed as typed events), get and delete a stored
response; `previous_response_id` continues a stored conversation of the same tenant."""

from __future__ import annotations

import logging
from dataclasses import replace
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ConfigDict, Field

from genloom.api.callers import caller
from genloom.api.errors import api_error
from genloom.api.routes_text import IGNORED_HEADER, chat_request
from genloom.api.schemas import VERSION_HEADER, ChatCompletionRequest, _Body
from genloom.config import ApiSettings
from genloom.gateway.openai_shapes import CHAT_ENDPOINT, completion_body
from genloom.gateway.pipeline.guard import restore_body
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.responses import (
    EventSequence,
    chat_fields,
    conversation_after,
    input_messages,
    message_item,
    new_response_id,
    now,
    output_items,
    response_body,
)
from genloom.jobs import ChoiceFinished, TokenEvent
from genloom.store.responses import ResponseStore, StoredResponse

log = logging.getLogger("genloom.api")
_IGNORED = ("include", "reasoning", "truncation", "service_tier", "prompt_cache_key", "prompt_cache_retention",
            "safety_identifier", "stream_options", "max_tool_calls")


class ResponseCreate(_Body):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    metadata: dict[str, str] | None = None
    user: str | None = None
    # Accepted, change nothing here; named in x-genloom-ignored.
    include: list[str] | None = None
    reasoning: dict[str, Any] | None = None
    truncation: str | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None
    stream_options: dict[str, Any] | None = None
    max_tool_calls: int | None = None
    # Not done: a clear 400 each.
    background: bool | None = None
    conversation: str | dict[str, Any] | None = None


def build_responses_router(pipeline: TextPipeline, store: ResponseStore, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.post("/responses")
    async def create(body: ResponseCreate, request: Request):
        from genloom.gateway.errors import InvalidRequest

        if body.background:
            raise InvalidRequest("background responses are not supported; use /v1/jobs for async work", "background")
        if body.conversation is not None:
            raise InvalidRequest("conversations are not supported yet; use previous_response_id", "conversation")
        who = caller(request)
        previous = await store.get(body.previous_response_id, tenant=who.tenant) if body.previous_response_id else None
        raw = body.model_dump(exclude_none=True)
        messages = input_messages(raw, previous.conversation if previous else None)
        chat = ChatCompletionRequest.model_validate(chat_fields(raw, messages))
        response_id, created = new_response_id(), now()
        # The request log's entry carries the response's id, so feedback on the response finds it.
        text_request = replace(chat_request(chat, settings, who), id=response_id)
        ignored = [name for name in _IGNORED if raw.get(name) is not None]
        headers = {IGNORED_HEADER: ", ".join(ignored)} if ignored else {}

        async def keep(resp: dict[str, Any], output: list[dict[str, Any]]) -> None:
            if body.store is False:
                return
            await store.add(StoredResponse(
                id=response_id, tenant=who.tenant, previous_id=body.previous_response_id,
                conversation=conversation_after(messages, output), body=resp, created_at=datetime.fromtimestamp(created, UTC),
            ))

        if not body.stream:
            answer = await pipeline.answer(text_request, request.is_disconnected)
            chat_body = answer.body
            finish = chat_body["choices"][0]["finish_reason"]
            output = output_items(chat_body, response_id)
            resp = response_body(raw, response_id=response_id, created=created, model=chat_body["model"], output=output,
                                 usage=chat_body["usage"], status="incomplete" if finish == "length" else "completed",
                                 finish_reason=finish)
            await keep(resp, output)
            version = chat_body.get("system_fingerprint") or chat_body["model"]
            return JSONResponse(resp, headers=headers | {VERSION_HEADER: version})

        events = pipeline.stream(text_request, request.is_disconnected)
        _, completion = await events.__anext__()  # errors before this stay HTTP errors

        async def body_events() -> AsyncIterator[str]:
            seq = EventSequence()
            started = response_body(raw, response_id=response_id, created=created, model=body.model, output=[],
                                    usage=None, status="in_progress", finish_reason=None)
            yield seq.event("response.created", response=started)
            yield seq.event("response.in_progress", response=started)
            held = completion.tools is not None and completion.tools.parsed
            item_id = f"msg_{response_id.removeprefix('resp_')}"
            text = ""
            try:
                if not held:
                    yield seq.event("response.output_item.added", output_index=0, item=message_item(item_id, "", "in_progress"))
                    yield seq.event("response.content_part.added", item_id=item_id, output_index=0, content_index=0,
                                    part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
                finish = None
                async for event, _ in events:
                    if isinstance(event, TokenEvent) and not held and event.index == 0 and event.delta:
                        text += event.delta
                        yield seq.event("response.output_text.delta", item_id=item_id, output_index=0, content_index=0,
                                        delta=event.delta, logprobs=[])
                    elif isinstance(event, ChoiceFinished) and event.index == 0:
                        finish = event.finish_reason
                chat_body = restore_body(completion_body(completion, CHAT_ENDPOINT), completion.restore)
                output = output_items(chat_body, response_id)
                if held:
                    for index, item in enumerate(output):
                        yield seq.event("response.output_item.added", output_index=index, item=item | {"status": "in_progress"})
                        if item["type"] == "function_call":
                            yield seq.event("response.function_call_arguments.delta", item_id=item["id"], output_index=index,
                                            delta=item["arguments"])
                            yield seq.event("response.function_call_arguments.done", item_id=item["id"], output_index=index,
                                            arguments=item["arguments"], name=item["name"])
                        yield seq.event("response.output_item.done", output_index=index, item=item)
                else:
                    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
                    yield seq.event("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text,
                                    logprobs=[])
                    yield seq.event("response.content_part.done", item_id=item_id, output_index=0, content_index=0, part=part)
                    yield seq.event("response.output_item.done", output_index=0, item=message_item(item_id, text, "completed"))
                status = "incomplete" if finish == "length" else "completed"
                done = response_body(raw, response_id=response_id, created=created, model=chat_body["model"], output=output,
                                     usage=chat_body["usage"], status=status, finish_reason=finish)
                await keep(done, output)
                yield seq.event("response.incomplete" if status == "incomplete" else "response.completed", response=done)
            except Exception as e:  # the status line is sent: an error event, never a cut
                error = api_error(e)
                if error is None:
                    log.exception("POST /v1/responses failed while streaming")
                    yield seq.event("error", code="server_error", message="internal server error", param=None)
                else:
                    yield seq.event("error", code=error.code, message=error.message, param=error.param)
            finally:
                await events.aclose()

        stream_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", VERSION_HEADER: completion.model} | headers
        return StreamingResponse(body_events(), media_type="text/event-stream", headers=stream_headers)

    @router.get("/responses/{response_id}")
    async def get(response_id: str, request: Request) -> dict[str, Any]:
        return (await store.get(response_id, tenant=caller(request).tenant)).body

    @router.delete("/responses/{response_id}")
    async def delete(response_id: str, request: Request) -> dict[str, Any]:
        await store.delete(response_id, tenant=caller(request).tenant)
        return {"id": response_id, "object": "response.deleted", "deleted": True}

    return router
