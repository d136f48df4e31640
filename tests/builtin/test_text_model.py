"""The built-in text model: the shipped checkpoint, and the training code that made it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from genloom.builtin.text_model import MODEL_NAME, TextModelConfig, train
from genloom.config.settings import BUILTIN_MODELS_DIR

SHIPPED = BUILTIN_MODELS_DIR / MODEL_NAME


def test_shipped_checkpoint_is_small_and_beats_the_unigram_baseline():
    weights = SHIPPED / "model.safetensors"
    assert weights.stat().st_size <= 25 * 1024 * 1024
    metrics = json.loads((SHIPPED / "metrics.json").read_text())
    assert metrics["held_out_perplexity"] * 5 < metrics["unigram_perplexity"]
    assert json.loads((SHIPPED / "config.json").read_text())["model_type"] == "llama"
    assert "chat_template" in (SHIPPED / "tokenizer_config.json").read_text() or (SHIPPED / "chat_template.jinja").exists()


TINY = TextModelConfig(
    vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64,
    context=32, batch_size=2, warmup_steps=1, checkpoint_every=1, eval_windows=2, threads=1,
)
DOCS = [f"Document {i}: the quick brown fox jumps over the lazy dog {i} times." * 3 for i in range(60)]


def test_resumed_training_ends_where_an_uninterrupted_run_ends(tmp_path: Path):
    straight = TextModelConfig(**{**TINY.__dict__, "steps": 4})
    train(straight, tmp_path / "a", tmp_path / "out-a", docs=DOCS)
    halfway = TextModelConfig(**{**TINY.__dict__, "steps": 2})
    train(halfway, tmp_path / "b", tmp_path / "out-b", docs=DOCS)
    metrics = train(straight, tmp_path / "b", tmp_path / "out-b", docs=DOCS)
    a = load_file(tmp_path / "out-a" / "model.safetensors")
    b = load_file(tmp_path / "out-b" / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics["held_out_perplexity"] > 0 and metrics["unigram_perplexity"] > 0
