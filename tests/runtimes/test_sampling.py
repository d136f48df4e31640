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


# -- the logit controls --------------------------------------------------------------------


def shaped(logits, prompt=(), output=(), end_ids=frozenset({0}), generated=0, **params):
    from genloom.runtimes.sampling import shape_logits

    return shape_logits(
        torch.tensor(logits), SamplingParams(max_tokens=10, **params), prompt_ids=list(prompt), output_ids=list(output),
        end_ids=set(end_ids), generated=generated,
    )


def test_logit_bias_adds_to_the_named_tokens_only():
    assert shaped([1.0, 1.0, 1.0], logit_bias=((2, 5.0), (0, -1.0))).tolist() == [0.0, 1.0, 6.0]


def test_min_tokens_rules_out_the_end_and_the_stop_ids_until_reached():
    early = shaped([5.0, 1.0, 4.0], min_tokens=2, stop_token_ids=(2,), generated=1)
    assert early[0] == float("-inf") and early[2] == float("-inf") and early[1] == 1.0
    assert shaped([5.0, 1.0, 4.0], min_tokens=2, stop_token_ids=(2,), generated=2).tolist() == [5.0, 1.0, 4.0]


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_seen_tokens():
    out = shaped([2.0, -2.0, 2.0, -2.0], prompt=[0], output=[1], repetition_penalty=2.0)
    assert out.tolist() == [1.0, -4.0, 2.0, -2.0]


def test_presence_and_frequency_penalties_count_the_output_only():
    out = shaped([1.0, 1.0, 1.0], prompt=[2, 2], output=[1, 1, 1], presence_penalty=0.5, frequency_penalty=0.25)
    assert out.tolist() == [1.0, 1.0 - 0.5 - 0.75, 1.0]


def test_no_control_is_no_change_and_the_input_is_left_alone():
    logits = torch.tensor([1.0, 2.0, 3.0])
    params = SamplingParams(max_tokens=3)
    assert not params.shapes_logits
    shaped_copy = shaped([1.0, 2.0, 3.0], logit_bias=((0, 1.0),))
    assert shaped_copy.tolist() == [2.0, 2.0, 3.0] and logits.tolist() == [1.0, 2.0, 3.0]


def test_token_logprobs_are_the_distributions_and_the_top_are_ordered():
    from genloom.runtimes.sampling import token_logprobs

    chosen, top = token_logprobs(torch.tensor([0.0, 1.0, 2.0]), 1, 2)
    expected = torch.log_softmax(torch.tensor([0.0, 1.0, 2.0]), -1)
    assert chosen == pytest.approx(float(expected[1]))
    assert [i for i, _ in top] == [2, 1] and top[0][1] == pytest.approx(float(expected[2]))


class SpecialTokens(CharTokenizer):
    """Ids 0 to 9 are special tokens: they decode to nothing, as with skip_special_tokens."""

    def decode(self, ids, skip_special_tokens=True):
        self.calls = getattr(self, "calls", 0) + 1
        self.longest = max(getattr(self, "longest", 0), len(ids))
        return "".join(chr(i) for i in ids if i >= 10)


def test_tokens_that_show_nothing_do_not_hold_the_window_open():
    tokenizer = SpecialTokens()
    acc = TextAccumulator(tokenizer=tokenizer)
    for i in range(500):
        acc.add(1 if i % 50 else ord("a"))
    assert acc.take_delta(final=True) == "a" * 10
    assert tokenizer.longest <= 3  # the window never grew with the run of special tokens


class InvalidBytes(CharTokenizer):
    """Id 1 is a stray continuation byte: alone or in a run it never becomes a character."""

    def decode(self, ids, skip_special_tokens=True):
        self.longest = max(getattr(self, "longest", 0), len(ids))
        return "".join("\ufffd" if i == 1 else chr(i) for i in ids)


def test_bytes_that_never_become_a_character_are_given_up_on():
    tokenizer = InvalidBytes()
    acc = TextAccumulator(tokenizer=tokenizer)
    for _ in range(300):
        acc.add(1)
    acc.add(ord("z"))
    text = acc.take_delta(final=True)
    assert text.endswith("z") and set(text[:-1]) == {"\ufffd"}
    assert tokenizer.longest <= 20  # bounded: at most two windows of pending bytes, whatever the run
