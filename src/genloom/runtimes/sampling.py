"""Token choice and incremental detokenisation for one sequence: plain functions and a small
class, no model and no batching, so they can be tested on their own."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from genloom.jobs import SamplingParams


def shape_logits(
    logits: torch.Tensor, params: SamplingParams, *, prompt_ids: Sequence[int], output_ids: Sequence[int],
    end_ids: set[int], generated: int,
) -> torch.Tensor:
    """One row of logits after the request's logit controls, in vLLM's order: the bias, no end of
    text before `min_tokens`, the repetition penalty (prompt and output), then the presence and
    frequency penalties (output). A new tensor; `logits` is left alone."""
    logits = logits.float().clone()
    vocab = logits.shape[-1]
    if params.logit_bias:
        ids = torch.tensor([i for i, _ in params.logit_bias if i < vocab], dtype=torch.long)
        if len(ids):
            logits[ids] += torch.tensor([b for i, b in params.logit_bias if i < vocab])
    if generated < params.min_tokens:
        banned = [i for i in (end_ids | set(params.stop_token_ids)) if i < vocab]
        if banned:
            logits[torch.tensor(banned, dtype=torch.long)] = float("-inf")
    if params.repetition_penalty != 1.0:
        seen = torch.tensor(sorted(set(prompt_ids) | set(output_ids)), dtype=torch.long)
        if len(seen):
            values = logits[seen]
            logits[seen] = torch.where(values > 0, values / params.repetition_penalty, values * params.repetition_penalty)
            logits.clamp_(max=torch.finfo(logits.dtype).max)  # a tiny penalty (1e-300) divides past float32's range
    if (params.presence_penalty or params.frequency_penalty) and output_ids:
        counts = torch.bincount(torch.tensor(output_ids, dtype=torch.long), minlength=vocab)[:vocab].float()
        logits -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).float()
    return logits


def token_logprobs(logits: torch.Tensor, token: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's log-probability under `logits` (after the logit controls, before
    temperature: the model's own distribution, as vLLM reports it) and the `top` likeliest."""
    # A token that cannot be chosen (-inf) gets -9999.0, as OpenAI reports it: JSON has no infinity.
    logprobs = torch.log_softmax(logits.float(), dim=-1).clamp(min=-9999.0)
    best: list[tuple[int, float]] = []
    if top:
        values, ids = torch.topk(logprobs, top)
        best = list(zip(ids.tolist(), values.tolist()))
    return float(logprobs[token]), best


def sample_token(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """Choose the next token from one row of logits (shape [vocab])."""
    if params.greedy:
        return int(torch.argmax(logits))
    scaled = logits.float() / params.temperature
    if not torch.isfinite(scaled.max()):  # a temperature so small (1e-300) that dividing overflows: its limit
        return int(torch.argmax(logits))
    logits = scaled
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        # Keep the smallest prefix whose mass reaches top_p; the first token always stays.
        outside = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) >= params.top_p
        outside[0] = False  # also when top_p (1e-300) rounds to 0 in float32
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=generator))


_MAX_PENDING_TOKENS = 8  # a UTF-8 character is at most 4 byte tokens; more that still do not decode are invalid


@dataclass
class TextAccumulator:
    """Turns a growing list of token ids into text deltas that are safe to send.

    Decodes a short window instead of the whole sequence each step, holds back an incomplete
    UTF-8 character, and holds back any tail that might be the start of a stop sequence."""

    tokenizer: object
    stop: tuple[str, ...] = ()
    ids: list[int] = field(default_factory=list)
    text: str = ""
    sent: int = 0
    stopped: bool = False
    _prefix_offset: int = 0
    _read_offset: int = 0

    def add(self, token_id: int) -> None:
        self.ids.append(token_id)
        prefix = self.tokenizer.decode(self.ids[self._prefix_offset : self._read_offset], skip_special_tokens=True)
        full = self.tokenizer.decode(self.ids[self._prefix_offset :], skip_special_tokens=True)
        complete = len(full) > len(prefix) and not full.endswith("\ufffd")
        # Tokens that show nothing (special tokens), or bytes that never became a character,
        # must not hold the window open: it would be decoded whole at every token, and a long
        # run of them (a model past its context) turns each step's decode quadratic.
        if complete or full == prefix or len(self.ids) - self._read_offset > _MAX_PENDING_TOKENS:
            self.text += full[len(prefix) :] if full.startswith(prefix) else ""
            self._prefix_offset, self._read_offset = self._read_offset, len(self.ids)
        if self.stop:
            self._cut_at_stop()

    def _cut_at_stop(self) -> None:
        longest = max(len(s) for s in self.stop)
        window_start = max(0, self.sent - longest)
        hits = [i for i in (self.text.find(s, window_start) for s in self.stop) if i >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True

    def take_delta(self, final: bool = False) -> str:
        """Text not yet sent; unless final, minus a tail that could still become a stop sequence."""
        end = len(self.text)
        if not final and not self.stopped:
            end -= self._held_back()
        delta = self.text[self.sent : end] if end > self.sent else ""
        self.sent = max(self.sent, end)
        return delta

    def _held_back(self) -> int:
        for length in range(min(len(self.text), max((len(s) for s in self.stop), default=0)), 0, -1):
            tail = self.text[-length:]
            if any(s.startswith(tail) for s in self.stop):
                return length
        return 0
