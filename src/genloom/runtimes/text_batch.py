"""Iteration-level (continuous) batching over a Hugging Face causal LM.

The running sequences share one key/value cache laid out left-padded: row i holds its tokens
at the right end, padding at the left, and a 2-D attention mask marks what is real. Each
`step` prefills the sequences that joined since the last step, then decodes one token for
every row. A finished or cancelled row leaves the batch before the next step and the common
left padding is trimmed, so short survivors do not pay for a long sequence that has left.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Hashable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from genloom.jobs import SamplingParams, TokenLogprob
from genloom.runtimes.multi_lora import MultiLora
from genloom.runtimes.constrain import Constrainer
from genloom.runtimes.sampling import TextAccumulator, sample_token, shape_logits, token_logprobs


class FinishReason:
    STOP = "stop"
    LENGTH = "length"


@dataclass(frozen=True)
class NewSequence:
    key: Hashable
    prompt_ids: Sequence[int]
    params: SamplingParams
    adapter: str | None = None  # a LoRA adapter of the batch's `adapters` this row runs with (None: the base)


@dataclass(frozen=True)
class StepOutput:
    """What one step produced for one sequence: a text delta, and why it ended if it did."""

    key: Hashable
    delta: str
    token_count: int
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # the token chosen this step, when the request asked


@dataclass
class _Row:
    key: Hashable
    params: SamplingParams
    prompt_ids: Sequence[int]
    generator: torch.Generator | None
    text: TextAccumulator
    matcher: Any = None  # the row's grammar matcher (llguidance) when its output is constrained
    last_token: int = -1
    generated: int = 0
    finish_reason: str | None = field(default=None)
    adapter: str | None = None


class DecodeBatch:
    def __init__(
        self, *, model, tokenizer, eos_token_ids: set[int], max_context: int, device: torch.device,
        constrainer: Callable[[], Constrainer] | None = None, adapters: MultiLora | None = None,
    ) -> None:
        """`constrainer` gives the grammar machinery when a row first needs it (response_format);
        `adapters`: LoRA adapters of this model that rows may name (each row its own, in one pass)."""
        self._model = model
        self._adapters = adapters
        self._constrainer = constrainer
        self._tokenizer = tokenizer
        self._eos = eos_token_ids
        self._max_context = max_context
        self._device = device
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._rows: list[_Row] = []
        self._cache: DynamicCache | None = None
        self._mask: torch.Tensor | None = None  # [rows, cached length], 1 where a real token is
        self._cache_arg = cache_argument(model)

    def __len__(self) -> int:
        return len(self._rows)

    def keys(self) -> list[Hashable]:
        return [r.key for r in self._rows]

    @torch.inference_mode()
    def step(self, joining: Sequence[NewSequence] = ()) -> list[StepOutput]:
        """Prefill `joining`, then decode one token for every other running row."""
        outputs: list[StepOutput] = []
        decoding = list(self._rows)
        if decoding:
            logits = self._decode_forward()
            outputs += self._advance(decoding, logits)
        if joining:
            outputs += self._prefill(joining)
        self._drop_finished()
        return outputs

    def remove(self, keys: set[Hashable]) -> None:
        """Cancel sequences; their slots are free for the next step."""
        for row in self._rows:
            if row.key in keys:
                row.finish_reason = "cancelled"
        self._drop_finished()

    def _new_row(self, seq: NewSequence) -> _Row:
        generator = None
        if not seq.params.greedy:
            generator = torch.Generator()
            generator.manual_seed(seq.params.seed if seq.params.seed is not None else random.getrandbits(63))
        text = TextAccumulator(tokenizer=self._tokenizer, stop=seq.params.stop)
        matcher = None
        if seq.params.grammar is not None:
            if self._constrainer is None:
                raise RuntimeError("this batch cannot constrain output (no grammar machinery)")
            matcher = self._constrainer().matcher(seq.params.grammar)
        return _Row(key=seq.key, params=seq.params, prompt_ids=seq.prompt_ids, generator=generator, text=text, matcher=matcher,
                    adapter=seq.adapter)

    def _prefill(self, joining: Sequence[NewSequence]) -> list[StepOutput]:
        lengths = [len(s.prompt_ids) for s in joining]
        width = max(lengths)
        # Right-padded so that no query row is fully masked (which would put NaNs in the cache);
        # rolled to the batch's left-padded layout afterwards.
        ids = torch.full((len(joining), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(joining), width), dtype=torch.long)
        for i, seq in enumerate(joining):
            ids[i, : lengths[i]] = torch.as_tensor(seq.prompt_ids, dtype=torch.long)
            mask[i, : lengths[i]] = 1
        last = torch.tensor(lengths) - 1
        keep = torch.unique(last)
        cache = DynamicCache()
        with self._with_adapters([s.adapter for s in joining]):
            out = self._model(
                input_ids=ids.to(self._device),
                attention_mask=mask.to(self._device),
                **{self._cache_arg: cache},
                use_cache=True,
                logits_to_keep=keep.to(self._device),
            )
        column = torch.searchsorted(keep, last)
        logits = out.logits[torch.arange(len(joining)), column.to(self._device)]
        shift = (width - torch.tensor(lengths)).to(self._device)
        left_mask = _roll_rows(mask.to(self._device).unsqueeze(1).unsqueeze(-1), shift).squeeze(-1).squeeze(1)
        for layer in cache.layers:
            layer.keys = _roll_rows(layer.keys, shift)
            layer.values = _roll_rows(layer.values, shift)
        rows = [self._new_row(s) for s in joining]
        self._merge(rows, cache, left_mask)
        return self._advance(rows, logits)

    def _merge(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        if self._cache is None or not self._rows:
            self._rows, self._cache, self._mask = rows, cache, mask
            return
        width = max(self._mask.shape[1], mask.shape[1])
        for old, new in zip(self._cache.layers, cache.layers):
            old.keys = torch.cat([_left_pad(old.keys, width), _left_pad(new.keys, width)])
            old.values = torch.cat([_left_pad(old.values, width), _left_pad(new.values, width)])
        self._mask = torch.cat([_left_pad_mask(self._mask, width), _left_pad_mask(mask, width)])
        self._rows += rows

    def _decode_forward(self) -> torch.Tensor:
        ids = torch.tensor([[r.last_token] for r in self._rows], dtype=torch.long, device=self._device)
        self._mask = torch.cat([self._mask, torch.ones((len(self._rows), 1), dtype=self._mask.dtype, device=self._device)], 1)
        positions = (self._mask.sum(dim=1, keepdim=True) - 1).long()
        with self._with_adapters([r.adapter for r in self._rows]):
            out = self._model(
                input_ids=ids,
                attention_mask=self._mask,
                position_ids=positions,
                **{self._cache_arg: self._cache},
                use_cache=True,
                logits_to_keep=1,
            )
        return out.logits[:, -1, :]

    def _with_adapters(self, adapters: list[str | None]):
        """The forward pass's rows with their adapters (nothing to do when no row names one)."""
        if not any(adapters):
            return nullcontext()
        if self._adapters is None:
            raise RuntimeError("a row names an adapter, and this batch has none loaded")
        return self._adapters.rows(adapters)

    def _advance(self, rows: list[_Row], logits: torch.Tensor) -> list[StepOutput]:
        constrained = [(i, r.matcher) for i, r in enumerate(rows) if r.matcher is not None]
        if constrained:
            assert self._constrainer is not None
            self._constrainer().mask(logits, constrained)  # the other rows are left as they are
        greedy = torch.argmax(logits, dim=-1).tolist() if any(r.params.greedy for r in rows) else None
        outputs = []
        for i, row in enumerate(rows):
            params, row_logits = row.params, logits[i]
            if params.shapes_logits:  # the fast path (no controls) never copies a row
                row_logits = shape_logits(
                    row_logits, params, prompt_ids=row.prompt_ids, output_ids=row.text.ids, end_ids=self._eos,
                    generated=row.generated,
                )
                token = int(torch.argmax(row_logits)) if params.greedy else sample_token(row_logits, params, row.generator)
            else:
                token = greedy[i] if params.greedy else sample_token(row_logits, params, row.generator)
            row.last_token = token
            row.generated += 1
            ended = (token in self._eos and not params.ignore_eos) or token in params.stop_token_ids
            if row.matcher is not None and not ended:
                row.matcher.consume_token(token)
                ended_by_grammar = row.matcher.is_stopped()  # complete: nothing may follow
            else:
                ended_by_grammar = False
            logprobs = self._logprobs(row_logits, token, params.top_logprobs) if params.logprobs and not ended else ()
            if ended:
                row.finish_reason = FinishReason.STOP
            else:
                row.text.add(token)
                if row.text.stopped or ended_by_grammar:
                    row.finish_reason = FinishReason.STOP
                elif row.generated >= params.max_tokens or len(row.prompt_ids) + row.generated >= self._max_context:
                    row.finish_reason = FinishReason.LENGTH
            delta = row.text.take_delta(final=row.finish_reason is not None)
            outputs.append(StepOutput(row.key, delta, row.generated, row.finish_reason, logprobs))
        return outputs

    def _logprobs(self, logits: torch.Tensor, token: int, top: int) -> tuple[TokenLogprob, ...]:
        chosen, best = token_logprobs(logits, token, top)
        decode = self._tokenizer.decode
        return (TokenLogprob(decode([token]), _finite(chosen), tuple((decode([t]), _finite(lp)) for t, lp in best)),)

    def _drop_finished(self) -> None:
        keep = [i for i, r in enumerate(self._rows) if r.finish_reason is None]
        if len(keep) == len(self._rows):
            return
        self._rows = [self._rows[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        index = torch.tensor(keep, device=self._device)
        self._mask = self._mask[index]
        first_real = int(self._mask.any(dim=0).nonzero()[0])
        self._mask = self._mask[:, first_real:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, first_real:]
            layer.values = layer.values[index, :, first_real:]


def _finite(logprob: float) -> float:
    """A token the controls ruled out has logprob -inf, which JSON cannot carry: -9999.0, as OpenAI sends."""
    return max(logprob, -9999.0)


def _roll_rows(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Roll each row of x [rows, heads, length, dim] right along `length` by shift[row]."""
    length = x.shape[2]
    source = (torch.arange(length, device=x.device).unsqueeze(0) - shift.unsqueeze(1)) % length
    index = source[:, None, :, None].expand(x.shape[0], x.shape[1], length, x.shape[3])
    return torch.gather(x, 2, index)


def _left_pad(x: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(x, (0, 0, width - x.shape[2], 0)) if x.shape[2] < width else x


def _left_pad_mask(mask: torch.Tensor, width: int) -> torch.Tensor:
    return F.pad(mask, (width - mask.shape[1], 0)) if mask.shape[1] < width else mask


def cache_argument(model) -> str:
    """The forward argument that takes the KV cache: `cache` in recent transformers releases,
    `past_key_values` before (deprecated, removed in 5.40)."""
    parameters = inspect.signature(model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"
