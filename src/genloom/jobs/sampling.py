"""What a request asks of text generation, checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of generation. temperature 0 means greedy; top_k 0 means off."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    ignore_eos: bool = False  # run to max_tokens even past an end token (benchmarks, load tests)
    # OpenAI's: subtract presence (once a token has appeared) and frequency x count from its logit.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, bias added to its logit)
    # vLLM's extensions: divide a positive logit (multiply a negative one) of a token seen in the
    # prompt or the output; no end of text before min_tokens; more tokens that end a choice.
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    logprobs: bool = False  # each output token's log-probability
    top_logprobs: int = 0  # and this many of the likeliest tokens at each position
    grammar: str | None = None  # llguidance grammar every output must follow (response_format)

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0")
        if any(not s for s in self.stop):
            raise ValueError("stop sequences must not be empty")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError("min_tokens must be in [0, max_tokens]")
        if not 0 <= self.top_logprobs <= 20:
            raise ValueError("top_logprobs must be in [0, 20]")

    @property
    def shapes_logits(self) -> bool:
        """Whether anything changes the logits before a token is chosen (the fast path skips it all)."""
        return bool(
            self.presence_penalty or self.frequency_penalty or self.logit_bias or self.repetition_penalty != 1.0
            or self.min_tokens
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0
