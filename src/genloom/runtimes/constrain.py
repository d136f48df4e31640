"""Grammar-constrained decoding with llguidance (the engine vLLM and SGLang can use too): a
request's JSON schema becomes a grammar, each constrained row of a batch gets a matcher, and
before every token the matcher's mask rules out every token that would break the grammar. So a
`response_format` answer always parses and validates, even from a tiny model, unless it runs
out of `max_tokens` first (finish_reason "length", as with OpenAI).

Masks for all constrained rows of a step are computed together, in parallel on llguidance's own
threads (the GIL is released), so constraining rows does not serialise the batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


class Constrainer:
    """The grammar machinery of one model's batch: its tokenizer as llguidance sees it (built once),
    one matcher per constrained row, and the masks of a step."""

    def __init__(self, tokenizer, *, vocab_size: int, eos_token_ids: set[int]) -> None:
        import llguidance
        import llguidance.hf

        self._ll = llguidance
        self._tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=sorted(eos_token_ids) or None)
        self._executor = llguidance.LLExecutor()
        self.vocab_size = vocab_size

    def matcher(self, grammar: str):
        matcher = self._ll.LLMatcher(self._tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(f"the grammar cannot be used: {matcher.get_error()}")
        return matcher

    def mask(self, logits: torch.Tensor, matchers: Sequence[tuple[int, Any]]) -> None:
        """Rule out, in place, every token that would break its row's grammar: `matchers` pairs a
        row of `logits` with its matcher."""
        import llguidance.torch as llt

        bitmask = llt.allocate_token_bitmask(len(matchers), self.vocab_size)
        llt.fill_next_token_bitmask_par(self._executor, [(m, i) for i, (_, m) in enumerate(matchers)], bitmask)
        # One bit per token, little-endian within each 32-bit word (llguidance's own kernel needs
        # torch.compile, which a CPU-only install may not be able to run).
        allowed = np.unpackbits(bitmask.numpy().view(np.uint8), axis=1, bitorder="little")[:, : logits.shape[-1]]
        banned = torch.from_numpy(allowed == 0).to(logits.device)
        rows = torch.tensor([row for row, _ in matchers], device=logits.device)
        logits[rows] = logits[rows].masked_fill(banned, float("-inf"))
