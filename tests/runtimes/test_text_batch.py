"""The decode batch against a tiny random Llama: batching must not change what a prompt gets."""

from __future__ import annotations

import pytest

from genloom.config import RuntimeSettings
from genloom.jobs import SamplingParams
from genloom.runtimes.text import PromptError, TextRuntime
from genloom.runtimes.text_batch import DecodeBatch, NewSequence

PROMPTS = [
    "x",
    "The for statement iterates over the items of any sequence",
    "Hello there",
    "A much longer prompt about the import system, how modules are found, loaded and cached by Python",
    "print(",
    "Exceptions",
]


@pytest.fixture(scope="module")
def runtime(tiny_model_dir) -> TextRuntime:
    return TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())


def run(batch: DecodeBatch, seqs: list[NewSequence], join_every: int | None = None) -> dict:
    """Drive the batch to completion; with join_every, one more sequence joins every that many steps."""
    pending = list(seqs)
    texts = {s.key: "" for s in seqs}
    finished: dict = {}
    step = 0
    while len(finished) < len(seqs):
        if join_every is None:
            joining, pending = pending, []
        else:
            joining = [pending.pop(0)] if pending and step % join_every == 0 else []
        for out in batch.step(joining):
            texts[out.key] += out.delta
            if out.finish_reason:
                finished[out.key] = (out.finish_reason, out.token_count)
        step += 1
    assert len(batch) == 0
    return {k: (texts[k], *finished[k]) for k in texts}


def greedy(runtime, max_tokens=40, **kw):
    return [
        NewSequence(i, runtime.encode_completion(p), SamplingParams(max_tokens=max_tokens, temperature=0, **kw))
        for i, p in enumerate(PROMPTS)
    ]


def test_greedy_output_is_identical_alone_and_in_a_mixed_length_batch(runtime):
    alone = {}
    for seq in greedy(runtime):
        alone.update(run(runtime.new_batch(), [seq]))
    together = run(runtime.new_batch(), greedy(runtime))
    assert together == alone
    assert len({text for text, _, _ in alone.values()}) > 1, "the test model should not answer every prompt alike"


def test_greedy_output_is_identical_when_sequences_join_a_running_batch(runtime):
    alone = {}
    for seq in greedy(runtime):
        alone.update(run(runtime.new_batch(), [seq]))
    for every in (1, 3, 7):
        assert run(runtime.new_batch(), greedy(runtime), join_every=every) == alone


def test_max_tokens_ends_with_length_and_counts_tokens(runtime):
    seqs = [NewSequence("a", runtime.encode_completion("Hello"), SamplingParams(max_tokens=5, temperature=0))]
    text, reason, count = run(runtime.new_batch(), seqs)["a"]
    # Greedy decoding on this model may emit an end token early; otherwise it runs to the limit.
    assert (reason, count) == ("length", 5) or (reason == "stop" and count < 5)


def test_seeded_sampling_is_reproducible_and_independent_of_batch_company(runtime):
    params = SamplingParams(max_tokens=30, temperature=1.0, top_p=0.9, seed=42)
    target = NewSequence("t", runtime.encode_completion("Hello there"), params)
    alone = run(runtime.new_batch(), [target])
    company = [NewSequence(i, runtime.encode_completion(p), SamplingParams(max_tokens=20, temperature=1.2)) for i, p in enumerate(PROMPTS)]
    together = run(runtime.new_batch(), [*company, target])
    assert together["t"] == alone["t"]
    other_seed = run(runtime.new_batch(), [NewSequence("t", target.prompt_ids, SamplingParams(max_tokens=30, seed=43))])
    assert other_seed["t"][0] != alone["t"][0]


def test_stop_sequence_ends_generation_before_the_stop_text(runtime):
    free = run(runtime.new_batch(), [NewSequence("a", runtime.encode_completion("Hello there"), SamplingParams(max_tokens=40, temperature=0))])
    text = free["a"][0]
    assert len(text) > 6
    stop = text[3:6]
    stopped = run(
        runtime.new_batch(),
        [NewSequence("a", runtime.encode_completion("Hello there"), SamplingParams(max_tokens=40, temperature=0, stop=(stop,)))],
    )
    assert stopped["a"][0] == text[: text.find(stop)]
    assert stopped["a"][1] == "stop"


def test_cancelled_sequence_leaves_the_batch_at_once(runtime):
    batch = runtime.new_batch()
    seqs = greedy(runtime, max_tokens=50)
    batch.step(seqs)
    assert len(batch) == len(seqs)
    batch.remove({0, 3})
    assert len(batch) == len(seqs) - 2
    keys = {out.key for out in batch.step()}
    assert keys == {1, 2, 4, 5}


def test_prompt_longer_than_the_context_is_refused(runtime):
    with pytest.raises(PromptError, match="at most"):
        runtime.encode_completion("word " * 1000)


def test_chat_template_is_applied(runtime):
    ids = runtime.encode_chat([{"role": "user", "content": "hi"}])
    assert runtime.tokenizer.decode(ids).endswith("<|assistant|>\n")
