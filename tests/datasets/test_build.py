"""Building a dataset from examples: each step does what it says and is counted, the split is
stable, and the files round-trip."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from genloom.datasets.build import BuildSettings, Example, build, chat_messages, garbage, near_duplicates
from genloom.datasets.files import content_hash, from_parquet, to_jsonl, to_parquet


def ex(prompt: str, answer: str, i: int = 0, user: str | None = None) -> Example:
    return Example(messages=({"role": "user", "content": prompt}, {"role": "assistant", "content": answer}),
                   lineage={"source": "test", "request_id": f"chatcmpl-{i}"}, tenant="t1", user=user)


def distinct(n: int) -> list[Example]:
    topics = ["bread", "tides", "violins", "glaciers", "sourdough", "comets", "bees", "granite", "kites", "owls"]
    return [ex(f"Tell me one fact about {topics[i % 10]} number {i}.",
               f"Fact {i}: {topics[i % 10]} are interesting because of reason {i * 7 % 13} and detail {i}.", i)
            for i in range(n)]


def test_each_step_drops_what_it_should_and_counts_it():
    rows = distinct(20)
    rows += [ex("Tell me one fact about bread number 0.", "Fact 0:  bread are interesting because of reason 0 and detail 0.", 100)]  # exact, up to spacing
    rows += [ex("Tell me one fact about bread number 0.",
                "Fact 0: bread are interesting because of reason 0 and detail 0. Truly.", 101)]  # near duplicate
    rows += [ex("hello", "", 102), ex("hello", "hello", 103), ex("x", "!!!! #### $$$$ %%%% ^^^^", 104),
             ex("loop", "the the the the the the the the the the the the the the", 105)]
    rows += [ex("Mail me at jane.doe@example.com please", "Sure, I will write to jane.doe@example.com today.", 106)]
    built = build(rows, BuildSettings(eval_fraction=0.25, near_duplicate_threshold=0.6))
    assert built.counts["read"] == built.counts["selected"] == 27
    assert built.dropped == {"answer_too_short": 1, "duplicate": 1, "echo": 1, "garbled": 1, "near_duplicate": 1,
                             "repetitive": 1}
    assert built.counts["cleaned"] == 23 and built.counts["deduplicated"] == 22 and built.counts["near_deduplicated"] == 21
    assert built.counts["train"] + built.counts["eval"] == 21 and built.counts["eval"] >= 1
    assert built.counts["pii_scrubbed_rows"] == 1 and built.scrubbed == {"EMAIL": 2}
    [mail] = [r for r in built.rows if r.example.lineage["request_id"] == "chatcmpl-106"]
    assert [m["content"] for m in mail.example.messages] == ["Mail me at <EMAIL_1> please", "Sure, I will write to <EMAIL_1> today."]


def test_the_split_of_a_row_does_not_depend_on_the_others():
    rows = distinct(60)
    settings = BuildSettings(eval_fraction=0.2, seed=3)
    whole = {r.example.lineage["request_id"]: r.split for r in build(rows, settings).rows}
    part = {r.example.lineage["request_id"]: r.split for r in build(rows[::2], settings).rows}
    assert all(whole[k] == v for k, v in part.items())
    assert 4 <= sum(v == "eval" for v in whole.values()) <= 20
    other_seed = {r.example.lineage["request_id"]: r.split for r in build(rows, BuildSettings(eval_fraction=0.2, seed=4)).rows}
    assert other_seed != whole


def test_cleaning_normalises_whitespace_and_control_characters():
    [row] = build([ex("  Hi\u200b there\r\n\r\n\r\n\r\nfriend\x07 ", "Hello\t\t  world  ", 1)], BuildSettings(scrub_pii=False)).rows
    assert [m["content"] for m in row.example.messages] == ["Hi there\n\nfriend", "Hello world"]


def test_near_duplicates_keep_the_first_and_spare_different_texts():
    a = ex("Write a haiku about the sea", "Waves fold into foam, the grey gulls ride on the wind, salt on every stone.", 1)
    b = ex("Write a haiku about the sea", "Waves fold into foam, the grey gulls ride on the wind, salt on every stone!", 2)
    c = ex("Write a haiku about a forest", "Moss hides the old roots, a woodpecker knocks twice, light falls through the pines.", 3)
    assert near_duplicates([a, b, c], 0.8) == {1}
    assert near_duplicates([a, b, c], 1.0) == set()


@pytest.mark.parametrize(("messages", "reason"), [
    (({"role": "user", "content": "hi"},), "no_answer"),
    (({"role": "system", "content": "be nice"}, {"role": "assistant", "content": "ok"}), "no_prompt"),
    (({"role": "wizard", "content": "hi"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}), "bad_role"),
])
def test_malformed_conversations_are_named(messages, reason):
    assert garbage(Example(messages=messages, lineage={}), BuildSettings()) == reason


def test_parquet_and_jsonl_round_trip_with_lineage():
    built = build(distinct(12) + [ex("who?", "me", 50, user="u-9")], BuildSettings(eval_fraction=0.3))
    data = to_parquet(built.rows)
    assert pq.read_table(__import__("io").BytesIO(data)).schema.names[:3] == ["row_hash", "split", "messages"]
    back = from_parquet(data)
    assert back == built.rows and content_hash(back) == content_hash(built.rows)
    lines = [json.loads(line) for line in to_jsonl(built.rows, "train").decode().splitlines()]
    assert len(lines) == built.counts["train"] and all(list(line) == ["messages"] for line in lines)
    assert lines[0]["messages"][-1]["role"] == "assistant"
    assert [r.example.user for r in back if r.example.lineage["request_id"] == "chatcmpl-50"] == ["u-9"]


def test_chat_messages_from_logged_prompts():
    assert chat_messages("Once upon", " a time") == ({"role": "user", "content": "Once upon"},
                                                      {"role": "assistant", "content": " a time"})
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert chat_messages(parts, "c")[0] == {"role": "user", "content": "ab"}
    assert chat_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "c") is None
