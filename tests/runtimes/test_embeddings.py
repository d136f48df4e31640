"""The embedding runtime on the real built-in model (all-MiniLM-L6-v2, about 23M parameters)."""

from __future__ import annotations

import math

import pytest

from genloom.runtimes.embeddings import EmbeddingInputError, EmbeddingRuntime, builtin_embedding_model_path

MODEL_PATH = builtin_embedding_model_path()  # a dependency: None would be a broken install, and fails below


@pytest.fixture(scope="module")
def runtime() -> EmbeddingRuntime:
    assert MODEL_PATH is not None
    return EmbeddingRuntime(name="all-minilm-l6-v2", path=MODEL_PATH)


def _dot(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_info_describes_the_model(runtime):
    assert runtime.info.name == "all-minilm-l6-v2"
    assert runtime.info.dimensions == 384
    assert runtime.info.max_tokens == 256
    assert runtime.info.parameters > 20_000_000


def test_vectors_are_384_dimensional_unit_vectors(runtime):
    batch = runtime.embed(["a red circle", "the stock market fell"])
    assert [len(v) for v in batch.vectors] == [384, 384]
    for vector in batch.vectors:
        assert math.isclose(math.sqrt(_dot(vector, vector)), 1.0, abs_tol=1e-5)


def test_similar_sentences_are_closer_than_unrelated_ones(runtime):
    red, crimson, market = runtime.embed(["a red circle", "a crimson circle", "the stock market fell"]).vectors
    assert _dot(red, crimson) > _dot(red, market) + 0.3


def test_a_batch_gives_the_same_vectors_as_one_text_at_a_time(runtime):
    texts = ["a red circle", "x", "the stock market fell sharply on tuesday after the report", "word " * 300]
    together = runtime.embed(texts)
    for i, text in enumerate(texts):
        alone = runtime.embed([text])
        assert alone.token_counts == [together.token_counts[i]]
        assert max(abs(a - b) for a, b in zip(alone.vectors[0], together.vectors[i], strict=True)) < 1e-5


def test_token_counts_include_special_tokens_and_stop_at_max_tokens(runtime):
    batch = runtime.embed(["hello world", "word " * 1000])
    assert batch.token_counts == [4, 256]  # [CLS] hello world [SEP]; the long one is truncated


@pytest.mark.parametrize("texts", [[""], ["fine", ""], []])
def test_empty_input_is_refused(runtime, texts):
    with pytest.raises(EmbeddingInputError):
        runtime.embed(texts)
