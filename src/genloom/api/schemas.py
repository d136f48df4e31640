"""OpenAI-shaped request bodies. Unknown fields are refused (a typo should not be ignored),
except a few that OpenAI clients send and that change nothing here."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from genloom.gateway.errors import InvalidRequest
from genloom.jobs import SamplingParams


VERSION_HEADER = "x-genloom-model-version"  # every generation answer names the version that made it: name@vN

class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Body):
    type: Literal["text"]
    text: str


class OtherPart(BaseModel):
    """A content part no model here reads yet (images, audio, files): accepted by the schema so
    that the answer can say so plainly, naming the model."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image_url", "input_audio", "file", "refusal"]


class FunctionCall(_Body):
    name: str
    arguments: str


class ToolCallIn(_Body):
    """A call an assistant made earlier in the conversation."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Annotated[TextPart | OtherPart, Field(discriminator="type")]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # assistant
    tool_call_id: str | None = None  # tool: the call this answers
    refusal: str | None = None

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (only an assistant message with tool_calls may leave it out)")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    def rendered(self) -> dict[str, Any]:
        """The message as the gateway passes it on: text content, and the tool fields when set."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump() for c in self.tool_calls]
        if self.tool_call_id:
            message["tool_call_id"] = self.tool_call_id
        return message

    def other_parts(self) -> list[tuple[int, str]]:
        """(index, type) of each part that is not text."""
        if self.content is None or isinstance(self.content, str):
            return []
        return [(i, part.type) for i, part in enumerate(self.content) if isinstance(part, OtherPart)]


class StreamOptions(_Body):
    include_usage: bool = False


StopField = Annotated[str | list[Annotated[str, Field(min_length=1)]] | None, Field(None)]


class _Sampling(_Body):
    """Parameters shared by chat and completions. top_k and ignore_eos are extensions (as in vLLM)."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    ignore_eos: bool | None = None
    n: int | None = Field(None, ge=1)
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: StopField
    seed: int | None = Field(None, ge=0, le=2**63 - 1)  # what torch's generators take
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    # vLLM's extensions
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    min_tokens: int | None = Field(None, ge=0)
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(None, max_length=64)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    # OpenAI's fields that change nothing here: accepted, and named in the x-genloom-ignored header.
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    safety_identifier: str | None = None

    IGNORED: ClassVar[tuple[str, ...]] = ("service_tier", "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "store")
    # Fields that would change the answer and that Genloom does not do yet: a clear 400, never ignored.
    NOT_YET: ClassVar[dict[str, str]] = {}

    def ignored_fields(self) -> list[str]:
        """The fields the client set that change nothing here (for the x-genloom-ignored header)."""
        return [name for name in self.IGNORED if getattr(self, name, None) is not None]

    def refuse_what_is_not_done(self) -> None:
        for name, why in self.NOT_YET.items():
            if getattr(self, name, None) is not None:
                raise InvalidRequest(why, name)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, str) and not stop:
            raise ValueError("a stop sequence must not be empty")
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key in bias or {}:
            if not key.isdigit():
                raise ValueError(f"logit_bias keys are token ids (non-negative integers as strings), not {key!r}")
        if bias and len(bias) > 1024:
            raise ValueError("at most 1024 logit_bias entries")
        return bias

    def _logprobs(self) -> tuple[bool, int]:
        """(whether to return logprobs, how many alternatives per token)."""
        return False, 0

    def sampling_params(self, max_tokens: int | None, default_max_tokens: int) -> SamplingParams:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        logprobs, top_logprobs = self._logprobs()
        max_tokens = max_tokens or default_max_tokens
        if self.min_tokens and self.min_tokens > max_tokens:
            raise InvalidRequest(f"min_tokens ({self.min_tokens}) must not exceed max_tokens ({max_tokens})", "min_tokens")
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k or 0,
            stop=stop,
            seed=self.seed,
            ignore_eos=bool(self.ignore_eos),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            logit_bias=tuple(sorted((int(k), float(v)) for k, v in (self.logit_bias or {}).items())),
            repetition_penalty=1.0 if self.repetition_penalty is None else self.repetition_penalty,
            min_tokens=self.min_tokens or 0,
            stop_token_ids=tuple(self.stop_token_ids or ()),
            logprobs=logprobs,
            top_logprobs=top_logprobs,
        )

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    # Accepted and ignored: hints about reasoning, verbosity and predicted output change nothing
    # for the models served here; `modalities` may only ask for text.
    reasoning_effort: str | None = None
    verbosity: str | None = None
    prediction: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    modalities: list[Literal["text"]] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    # Not done (each a clear 400 that says so).
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None

    IGNORED: ClassVar[tuple[str, ...]] = (*_Sampling.IGNORED, "reasoning_effort", "verbosity", "prediction", "parallel_tool_calls", "modalities")
    NOT_YET: ClassVar[dict[str, str]] = {
        "functions": "functions are OpenAI's deprecated form of tools; send tools instead",
        "function_call": "function_call is OpenAI's deprecated form of tool_choice; send tool_choice instead",
        "audio": "audio output is not supported by Genloom",
        "web_search_options": "web search is not supported by Genloom",
    }


    def refuse_parts_for(self, model: str) -> None:
        """Image, audio and file parts, for a model that reads text only: a 400 that names it."""
        for m, message in enumerate(self.messages):
            for p, kind in message.other_parts():
                raise InvalidRequest(
                    f"model {model} reads text only; this message has an {kind} part (vision and audio are not supported)",
                    f"messages.{m}.content.{p}",
                )

    def _logprobs(self) -> tuple[bool, int]:
        if self.top_logprobs and not self.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs: true", "top_logprobs")
        return bool(self.logprobs), self.top_logprobs or 0

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = None

    def _logprobs(self) -> tuple[bool, int]:
        return self.logprobs is not None, self.logprobs or 0

    def single_prompt(self) -> str:
        if self.suffix:
            raise InvalidRequest("suffix (fill in the middle) is not supported by Genloom yet", "suffix")
        if self.best_of not in (None, 1):
            raise InvalidRequest("best_of is not supported by Genloom yet (send n and pick)", "best_of")
        if self.echo and self.logprobs is not None:
            raise InvalidRequest("echo with logprobs would need the prompt's logprobs, which Genloom does not give yet", "echo")
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequest("send one prompt per request (a list must hold exactly one string)", "prompt")
            return self.prompt[0]
        return self.prompt
