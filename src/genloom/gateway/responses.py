"""The Responses API as a view of chat completions: a request's instructions, input items and
(with `previous_response_id`) the stored conversation become chat messages; its function tools
and `text.format` become chat's tools and `response_format`; the answer becomes output items
(a message with output_text, or function_call items). Streamed, it is OpenAI's typed event
sequence. Stored responses (`store`, default true) are kept per tenant (store/responses.py)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from genloom.gateway.errors import InvalidRequest

RESPONSE_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


def input_messages(body: dict[str, Any], previous: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """Chat messages for a request: the stored conversation it continues, its instructions (they
    are not carried over from a previous response, as with OpenAI), then its input."""
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "developer", "content": body["instructions"]})
    messages += [m for m in previous or [] if m["role"] not in ("system", "developer")]
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        return messages
    if not isinstance(given, list) or not given:
        raise InvalidRequest("input is a string or a list of input items", "input")
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise InvalidRequest("each input item is an object", f"input.{i}")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest("a message's role is user, assistant, system or developer", f"input.{i}.role")
            messages.append({"role": role, "content": _text(item.get("content"), f"input.{i}.content")})
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.get("call_id"):
                raise InvalidRequest("a function_call_output names the call_id it answers", f"input.{i}.call_id")
            output = item.get("output")
            messages.append({"role": "tool", "tool_call_id": item["call_id"],
                             "content": output if isinstance(output, str) else json.dumps(output)})
        else:
            raise InvalidRequest(f"input items of type {kind!r} are not supported (message, function_call, "
                                 "function_call_output)", f"input.{i}.type")
    return messages


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text", "text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise InvalidRequest(f"content parts of type {kind!r} are not supported here (text only)", f"{param}.{j}")
            parts.append(part.get("text") or "")
        return "".join(parts)
    raise InvalidRequest("content is a string or a list of text parts", param)


def chat_fields(body: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat completions request a Responses request amounts to."""
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"), ("top_p", "top_p"),
                         ("user", "user"), ("parallel_tool_calls", "parallel_tool_calls"), ("top_logprobs", "top_logprobs")):
        if body.get(ours) is not None:
            chat[theirs] = body[ours]
    tools = body.get("tools") or []
    if tools:
        converted = []
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or tool.get("type") != "function":
                kind = tool.get("type") if isinstance(tool, dict) else None
                raise InvalidRequest(f"tools of type {kind!r} are not supported (function tools only)", f"tools.{i}")
            converted.append({"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters")
                                                               if k in tool}})
        chat["tools"] = converted
    choice = body.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") == "function":
        chat["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    elif choice is not None:
        chat["tool_choice"] = choice
    fmt = ((body.get("text") or {}).get("format")) or {"type": "text"}
    if fmt.get("type") == "json_schema":
        chat["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.get("name", "output"), "schema": fmt.get("schema") or {}, "strict": fmt.get("strict")}}
    elif fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") != "text":
        raise InvalidRequest(f"text.format type {fmt.get('type')!r} is not text, json_object or json_schema", "text.format")
    return chat


def output_items(chat_body: dict[str, Any], response_id: str) -> list[dict[str, Any]]:
    """The output items of an answer (its first choice): function calls, or one message."""
    message = chat_body["choices"][0]["message"]
    items: list[dict[str, Any]] = []
    for call in message.get("tool_calls") or []:
        items.append({"type": "function_call", "id": f"fc_{uuid.uuid4().hex[:24]}", "call_id": call["id"],
                      "name": call["function"]["name"], "arguments": call["function"]["arguments"], "status": "completed"})
    if message.get("content") or not items:
        items.insert(0, message_item(f"msg_{response_id.removeprefix('resp_')}", message.get("content") or "", "completed"))
    return items


def message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}] if status == "completed" else []}


def response_body(
    body: dict[str, Any], *, response_id: str, created: float, model: str, output: list[dict[str, Any]],
    usage: dict[str, int] | None, status: str, finish_reason: str | None,
) -> dict[str, Any]:
    """A Response object, as OpenAI's API returns it."""
    incomplete = {"reason": "max_output_tokens"} if finish_reason == "length" else None
    return {
        "id": response_id, "object": "response", "created_at": int(created), "status": status,
        "model": model, "output": output, "error": None, "incomplete_details": incomplete,
        "instructions": body.get("instructions"), "metadata": body.get("metadata") or {},
        "max_output_tokens": body.get("max_output_tokens"), "previous_response_id": body.get("previous_response_id"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True), "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [], "temperature": body.get("temperature", RESPONSE_DEFAULTS["temperature"]),
        "top_p": body.get("top_p", RESPONSE_DEFAULTS["top_p"]), "text": body.get("text") or {"format": {"type": "text"}},
        "store": body.get("store", True), "truncation": "disabled", "reasoning": None, "user": body.get("user"),
        "usage": None if usage is None else {
            "input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
            "total_tokens": usage["total_tokens"], "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


def conversation_after(messages: list[dict[str, Any]], output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The chat messages a later request continues from: these, and this answer."""
    calls = [{"id": i["call_id"], "type": "function", "function": {"name": i["name"], "arguments": i["arguments"]}}
             for i in output if i["type"] == "function_call"]
    text = "".join(c["text"] for i in output if i["type"] == "message" for c in i["content"])
    answer: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        answer["tool_calls"] = calls
    return [*messages, answer]


class EventSequence:
    """The typed events of a streamed response, numbered."""

    def __init__(self) -> None:
        self.number = 0

    def event(self, kind: str, **fields: Any) -> str:
        payload = {"type": kind, "sequence_number": self.number, **fields}
        self.number += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n"


def now() -> float:
    return time.time()
