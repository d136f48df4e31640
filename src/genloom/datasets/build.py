"""Turning examples into a training set, step by step, each step counted: select, clean,
deduplicate (exact, then near-duplicates by MinHash), scrub PII, split train/eval.

Pure: examples in, a `Built` out (rows, per-step counts, why rows were dropped); reading sources
and storing files is `genloom.gateway.datasets`'s job. Every step is deterministic, and the split
is decided per row by a hash of the seed and the row's content, so the same row lands in the same
split in every version of a dataset (a version rebuilt without some rows keeps the others'
split)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from genloom.guardrails.pii import PiiScanner, Placeholders, redact

ROLES = ("system", "user", "assistant")  # what fine-tuning reads (tool turns are not trained on)
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Example:
    """One conversation ending with the assistant's answer to learn, and where it came from."""

    messages: tuple[dict[str, str], ...]
    lineage: dict[str, Any]  # {"source": "feedback", "feedback_id", "request_id"} or {"source": "file", "file", "line"}
    tenant: str | None = None
    user: str | None = None

    @property
    def target(self) -> str:
        return self.messages[-1]["content"]

    def text(self) -> str:
        return "\n".join(f"{m['role']}: {m['content']}" for m in self.messages)

    def content_hash(self) -> str:
        """The hash of the conversation as trained on (roles and contents), nothing else."""
        canonical = json.dumps([[m["role"], m["content"]] for m in self.messages], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class BuildSettings:
    min_target_chars: int = 1
    max_chars: int = 32_000  # the whole conversation
    near_duplicate_threshold: float = 0.85  # estimated Jaccard similarity of word 3-gram sets; 1.0: exact only
    scrub_pii: bool = True
    eval_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise ValueError(f"near_duplicate_threshold must be in (0, 1], got {self.near_duplicate_threshold}")
        if self.min_target_chars < 1 or self.max_chars < self.min_target_chars:
            raise ValueError("min_target_chars must be >= 1 and max_chars >= min_target_chars")


@dataclass(frozen=True)
class Row:
    example: Example
    split: str  # train or eval
    row_hash: str  # content hash after cleaning and scrubbing


@dataclass
class Built:
    rows: list[Row]
    counts: dict[str, int]  # rows left after each step, in order
    dropped: dict[str, int] = field(default_factory=dict)  # why rows were dropped, by reason
    scrubbed: dict[str, int] = field(default_factory=dict)  # PII placeholders put in, by kind

    def split(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.split == name]


def build(examples: Iterable[Example], settings: BuildSettings, *, selected_from: int | None = None,
          dropped_at_selection: dict[str, int] | None = None) -> Built:
    """`examples` are what the source selected (`selected_from`: how many it read, with its reasons
    for the rest in `dropped_at_selection`)."""
    rows = list(examples)
    dropped: Counter[str] = Counter(dropped_at_selection or {})
    counts = {"read": selected_from if selected_from is not None else len(rows), "selected": len(rows)}

    cleaned = []
    for ex in rows:
        ex = clean(ex)
        reason = garbage(ex, settings)
        if reason is None:
            cleaned.append(ex)
        else:
            dropped[reason] += 1
    counts["cleaned"] = len(cleaned)

    exact, seen = [], set()
    for ex in cleaned:
        key = _dedupe_key(ex)
        if key in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(key)
        exact.append(ex)
    counts["deduplicated"] = len(exact)

    near = near_duplicates(exact, settings.near_duplicate_threshold, seed=settings.seed)
    dropped["near_duplicate"] += len(near)
    kept = [ex for i, ex in enumerate(exact) if i not in near]
    counts["near_deduplicated"] = len(kept)

    scrubbed: Counter[str] = Counter()
    if settings.scrub_pii:
        scanner = PiiScanner()
        before = kept
        kept = [scrub(ex, scanner, scrubbed) for ex in kept]
        counts["pii_scrubbed_rows"] = sum(a is not b for a, b in zip(before, kept))
    out = [Row(example=ex, split=split_of(h := ex.content_hash(), settings), row_hash=h) for ex in kept]
    counts["train"] = sum(r.split == "train" for r in out)
    counts["eval"] = len(out) - counts["train"]
    return Built(rows=out, counts=counts, dropped={k: v for k, v in sorted(dropped.items()) if v},
                 scrubbed=dict(sorted(scrubbed.items())))


def clean(ex: Example) -> Example:
    """Unicode NFC, no control characters but newlines and tabs, runs of spaces made one, at most
    one blank line in a row, each message stripped."""
    return replace(ex, messages=tuple({"role": m["role"], "content": _clean_text(m["content"])} for m in ex.messages))


def _clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def garbage(ex: Example, settings: BuildSettings) -> str | None:
    """Why an example is not worth training on, or None."""
    if not ex.messages or ex.messages[-1]["role"] != "assistant":
        return "no_answer"
    if not any(m["role"] == "user" for m in ex.messages[:-1]):
        return "no_prompt"
    if any(m["role"] not in ROLES for m in ex.messages):
        return "bad_role"
    target = ex.target
    if len(target) < settings.min_target_chars:
        return "answer_too_short"
    if sum(len(m["content"]) for m in ex.messages) > settings.max_chars:
        return "too_long"
    if "\ufffd" in target and target.count("\ufffd") * 20 > len(target):
        return "garbled"  # more than 5% replacement characters: a decoding accident
    letters = sum(c.isalnum() for c in target)
    if letters * 4 < len(target) and len(target) > 8:
        return "garbled"  # mostly symbols
    if len(target) >= 16 and Counter(target).most_common(1)[0][1] * 2 > len(target):
        return "repetitive"  # one character is more than half the answer
    words = _WORD.findall(target.lower())
    if len(words) >= 12 and len(set(words)) * 5 < len(words):
        return "repetitive"  # fewer than one word in five is new: a degenerate loop
    last_user = next(m["content"] for m in reversed(ex.messages[:-1]) if m["role"] == "user")
    if target.strip().lower() == last_user.strip().lower():
        return "echo"
    return None


def _dedupe_key(ex: Example) -> str:
    """Exact duplicates up to case and spacing."""
    canonical = "\x1e".join(f"{m['role']}\x1f{' '.join(m['content'].lower().split())}" for m in ex.messages)
    return hashlib.sha256(canonical.encode()).hexdigest()


def shingles(text: str, n: int = 3) -> set[bytes]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i:i + n]).encode() for i in range(len(words) - n + 1)}


def near_duplicates(examples: list[Example], threshold: float, *, seed: int = 0, num_perm: int = 128) -> set[int]:
    """Indices of examples that nearly repeat an earlier one (MinHash LSH over word 3-grams of the
    whole conversation, estimated Jaccard similarity at or above `threshold`); the first of a
    group is kept."""
    if threshold >= 1.0 or len(examples) < 2:
        return set()
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    out: set[int] = set()
    for i, ex in enumerate(examples):
        m = MinHash(num_perm=num_perm, seed=seed + 1)
        m.update_batch(sorted(shingles(ex.text())))
        # LSH finds candidates; the estimate decides (a candidate can fall below the threshold).
        if any(m.jaccard(kept[c]) >= threshold for c in lsh.query(m)):
            out.add(i)
            continue
        lsh.insert(i, m)
        kept[i] = m
    return out


def scrub(ex: Example, scanner: PiiScanner, counts: Counter[str]) -> Example:
    """PII in every message replaced by placeholders (`<EMAIL_1>`), numbered per conversation so
    that the same value is the same placeholder in the prompt and the answer."""
    placeholders = Placeholders()
    messages = []
    for m in ex.messages:
        spans = scanner.spans(m["content"])
        counts.update(s.label for s in spans)
        messages.append({"role": m["role"], "content": redact(m["content"], spans, placeholders)} if spans else m)
    return replace(ex, messages=tuple(messages)) if messages != list(ex.messages) else ex


def split_of(row_hash: str, settings: BuildSettings) -> str:
    """eval for a stable `eval_fraction` of rows: a hash of the seed and the row's content."""
    digest = hashlib.sha256(f"{settings.seed}:{row_hash}".encode()).digest()
    return "eval" if int.from_bytes(digest[:8], "big") / 2**64 < settings.eval_fraction else "train"


def chat_messages(prompt: list[dict[str, Any]] | str, answer: str) -> tuple[dict[str, str], ...] | None:
    """A logged prompt (chat messages or a completion prompt) and an answer as one conversation;
    None when the prompt holds something other than text (images, tool calls)."""
    if isinstance(prompt, str):
        return ({"role": "user", "content": prompt}, {"role": "assistant", "content": answer})
    out = []
    for m in prompt:
        content = m.get("content")
        if isinstance(content, list):  # text parts only
            if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
                return None
            content = "".join(p.get("text", "") for p in content)
        if m.get("role") not in ROLES or not isinstance(content, str) or m.get("tool_calls"):
            return None
        out.append({"role": m["role"], "content": content})
    return (*out, {"role": "assistant", "content": answer})


def chat_line(line: str) -> tuple[str | None, tuple[dict[str, str], ...]]:
    """One line of OpenAI's chat fine-tuning format (`{"messages": [...]}`: system, user and
    assistant turns with string contents, ending in a non-empty assistant answer), or what is
    wrong with it. Datasets built from a file and fine-tuning jobs read lines with this alone."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return f"not JSON ({e.msg} at column {e.colno})", ()
    messages = value.get("messages") if isinstance(value, dict) else None
    if not isinstance(messages, list) or len(messages) < 2:
        return "needs a 'messages' list of at least two messages", ()
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"message {i}: a role of system, user or assistant and a string content are needed", ()
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return "must end with an assistant message to learn", ()
    return None, tuple({"role": m["role"], "content": m["content"]} for m in messages)
