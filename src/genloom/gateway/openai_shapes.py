"""OpenAI's response shapes for text, built in one place: the whole body of a chat completion
or completion (realtime answers and stored job results) and the chunks of a stream."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genloom.gateway.text_service import Completion
from genloom.gateway.tools import parse_calls
from genloom.jobs import TokenLogprob
from genloom.registry import model_name

CHAT_ENDPOINT = "/v1/chat/completions"


def usage(completion: Completion) -> dict[str, int]:
    u = completion.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}]}`."""
    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {"content": [entry(t.token, t.logprob) | {"top_logprobs": [entry(*top) for top in t.top]} for t in tokens],
            "refusal": None}


def completion_logprobs(tokens: Sequence[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """Completions' (legacy) `logprobs`: parallel lists of tokens, their logprobs, the top
    alternatives as {token: logprob}, and each token's character offset in the text."""
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t.token)
    return {
        "tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [dict(t.top) for t in tokens], "text_offset": offsets,
    }


def assistant_message(completion: Completion, text: str, finish_reason: str | None) -> tuple[dict[str, Any], str | None]:
    """A chat choice's message and finish reason: with tools, the calls found in its text."""
    if completion.tools is None or not completion.tools.parsed:
        return {"role": "assistant", "content": text}, finish_reason
    content, calls = parse_calls(text, completion.tools)
    if not calls:
        return {"role": "assistant", "content": content}, finish_reason
    return {"role": "assistant", "content": content, "tool_calls": [c.openai() for c in calls]}, "tool_calls"


def completion_body(completion: Completion, endpoint: str) -> dict[str, Any]:
    """The non-streaming body OpenAI's API gives for `endpoint`; `model` is the model's name and
    `system_fingerprint` the version that answered (`name@vN`)."""
    wanted = completion.logprobs
    if endpoint == CHAT_ENDPOINT:
        obj = "chat.completion"
        choices = []
        for c in completion.choices:
            message, reason = assistant_message(completion, c.text, c.finish_reason)
            choices.append({"index": c.index, "message": message, "logprobs": chat_logprobs(c.logprobs) if wanted else None,
                            "finish_reason": reason})
    else:
        obj = "text_completion"
        choices = [
            {"index": c.index, "text": completion.echo + c.text,
             "logprobs": completion_logprobs(c.logprobs) if wanted else None, "finish_reason": c.finish_reason}
            for c in completion.choices
        ]
    return {
        "id": completion.id, "object": obj, "created": completion.created, "model": model_name(completion.model),
        "system_fingerprint": completion.model, "choices": choices, "usage": usage(completion),
    }


class ChatChunks:
    """The chunks of a streamed chat completion."""

    object = "chat.completion.chunk"

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage

    def chunk(self, completion: Completion, choice: dict[str, Any] | None, *, final_usage: bool = False) -> dict[str, Any]:
        """One chunk: a choice's delta, or (`choice` None) the closing usage chunk."""
        payload: dict[str, Any] = {
            "id": completion.id, "object": self.object, "created": completion.created,
            "model": model_name(completion.model), "system_fingerprint": completion.model,
            "choices": [choice] if choice is not None else [],
        }
        if self.include_usage:
            payload["usage"] = usage(completion) if final_usage else None
        return payload

    def opening(self, index: int, completion: Completion) -> dict[str, Any] | None:
        return {"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}

    def token(self, index: int, text: str, logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        return {"index": index, "delta": {"content": text}, "logprobs": chat_logprobs(logprobs) if logprobs else None,
                "finish_reason": None}

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        return {"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}

    def held(self, completion: Completion) -> bool:
        """Whether a choice's text waits for its end (tools: calls are parsed from the whole text)."""
        return completion.tools is not None and completion.tools.parsed

    def held_out(self, completion: Completion, index: int, reason: str) -> list[dict[str, Any]]:
        """A held choice at its end: its content or its tool calls in one delta, then its finish."""
        text = completion.choices[index].text
        message, reason = assistant_message(completion, completion.restore(text) if completion.restore else text, reason)
        delta: dict[str, Any] = {}
        if message.get("content"):
            delta["content"] = message["content"]
        if message.get("tool_calls"):
            delta["tool_calls"] = [call | {"index": i} for i, call in enumerate(message["tool_calls"])]
        chunks = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}] if delta else []
        return chunks + [self.finish(index, reason or "stop")]


class CompletionChunks(ChatChunks):
    """The chunks of a streamed (legacy) completion."""

    object = "text_completion"

    def held(self, completion: Completion) -> bool:
        return False

    def opening(self, index: int, completion: Completion) -> dict[str, Any] | None:
        """With `echo`, each choice opens with the prompt."""
        if not completion.echo:
            return None
        return {"index": index, "text": completion.echo, "logprobs": None, "finish_reason": None}

    def token(self, index: int, text: str, logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        return {"index": index, "text": text, "logprobs": completion_logprobs(logprobs) if logprobs else None,
                "finish_reason": None}

    def finish(self, index: int, reason: str) -> dict[str, Any]:
        return {"index": index, "text": "", "logprobs": None, "finish_reason": reason}
