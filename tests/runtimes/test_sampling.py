import pytest
import torch

from genloom.jobs import SamplingParams
from genloom.runtimes.sampling import sample_token, TextAccumulator


class CharTokenizer:
    """One token per character, so tests can write token ids as text."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids)


def feed(acc: TextAccumulator, text: str) -> str:
    sent = ""
    for ch in text:
        acc.add(ord(ch))
        sent += acc.take_delta()
        if acc.stopped:
            break
    return sent + acc.take_delta(final=True)


def test_greedy_picks_the_largest_logit():
    logits = torch.tensor([0.1, 3.0, 2.9])
    assert sample_token(logits, SamplingParams(max_tokens=1, temperature=0), None) == 1


def test_top_k_one_is_greedy_even_when_sampling():
    logits = torch.randn(50)
    gen = torch.Generator().manual_seed(0)
    picks = {sample_token(logits, SamplingParams(max_tokens=1, temperature=1.5, top_k=1), gen) for _ in range(20)}
    assert picks == {int(torch.argmax(logits))}


def test_top_p_keeps_only_the_smallest_nucleus():
    logits = torch.log(torch.tensor([0.6, 0.3, 0.05, 0.05]))
    gen = torch.Generator().manual_seed(0)
    picks = {sample_token(logits, SamplingParams(max_tokens=1, top_p=0.8), gen) for _ in range(200)}
    assert picks == {0, 1}


def test_same_seed_same_choices():
    logits = torch.randn(100)
    params = SamplingParams(max_tokens=1, temperature=1.0, seed=3)
    a = [sample_token(logits, params, torch.Generator().manual_seed(3)) for _ in range(5)]
    b = [sample_token(logits, params, torch.Generator().manual_seed(3)) for _ in range(5)]
    assert a == b


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=0)
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=1, top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=1, stop=("",))


def test_stop_sequence_cuts_the_text_and_is_never_sent():
    acc = TextAccumulator(tokenizer=CharTokenizer(), stop=("END",))
    assert feed(acc, "hello ENDworld") == "hello "
    assert acc.stopped


def test_partial_stop_prefix_is_held_back_then_released():
    acc = TextAccumulator(tokenizer=CharTokenizer(), stop=("STOP",))
    deltas = []
    for ch in "a STx":
        acc.add(ord(ch))
        deltas.append(acc.take_delta())
    assert deltas == ["a", " ", "", "", "STx"]


def test_earliest_of_several_stop_sequences_wins():
    acc = TextAccumulator(tokenizer=CharTokenizer(), stop=("zz", "b"))
    assert feed(acc, "aabzz") == "aa"
