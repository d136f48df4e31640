"""Quality and drift monitors, per model, off the request path.

Quality, per version, over the last `monitors.quality_window` answers: output length, empty
outputs, refusal phrases, repetition (distinct-2: distinct word bigrams over all bigrams; low
means the model repeats itself), the finish-reason mix and the error rate.

Drift of what users ask, per model: prompts are sampled (`monitors.sample_rate`) into a bounded
buffer; every `monitors.interval_s` a background task embeds them in one batch with the served
embedding model and adds them to the model's windows. The first `reference_n` embeddings are the
reference (or the current window, pinned by an operator); the last `window_n` are the current
window. The two are compared by a two-sample test: the squared maximum mean discrepancy (MMD²,
Gaussian kernel, bandwidth by the median heuristic) with a permutation p-value. `alert` is
p < `p_threshold` with at least `min_n` prompts in the current window. A few lines of numpy
cover it (alibi-detect's MMD drift detector does the same with TensorFlow or PyTorch and many
more dependencies).

Everything lives in the process that answers (an API replica sees its own traffic); a restart
starts a new reference."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genloom.config.settings import MonitorSettings

log = logging.getLogger("genloom.telemetry")

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]

# Phrases that open a refusal (English): a rising share after a new version is worth a look.
_REFUSAL = re.compile(
    r"\b(i can(?:no|')t (?:help|assist|do|provide|comply)|i(?: am|'m) (?:unable|not able) to|i won'?t be able to|"
    r"as an ai(?: language model)?|i(?: am|'m) sorry,? but|i must decline)\b",
    re.IGNORECASE,
)
_MAX_PROMPT_CHARS = 2000  # what drift embeds of a prompt (the embedding model reads ~256 tokens anyway)


def distinct_2(text: str) -> float | None:
    """Distinct word bigrams over all word bigrams (1.0: no repetition); None under two words."""
    words = text.split()
    if len(words) < 2:
        return None
    bigrams = list(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams)


def mmd_test(x: np.ndarray, y: np.ndarray, *, permutations: int, rng: np.random.Generator) -> tuple[float, float]:
    """(MMD², permutation p-value) of two samples (rows), Gaussian kernel, median-heuristic bandwidth."""
    z = np.vstack([x, y]).astype(np.float64)
    sq = np.sum(z * z, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0.0)
    off_diagonal = d2[~np.eye(len(z), dtype=bool)]
    bandwidth = float(np.median(off_diagonal)) or 1.0
    k = np.exp(-d2 / bandwidth)
    n = len(x)

    def statistic(order: np.ndarray) -> float:
        kk = k[np.ix_(order, order)]
        a, b, ab = kk[:n, :n], kk[n:, n:], kk[:n, n:]
        m = len(order) - n
        # Unbiased estimates: the diagonals (a point against itself) are left out.
        return float((a.sum() - np.trace(a)) / (n * (n - 1)) + (b.sum() - np.trace(b)) / (m * (m - 1)) - 2 * ab.mean())

    identity = np.arange(len(z))
    observed = statistic(identity)
    exceed = sum(statistic(rng.permutation(identity)) >= observed for _ in range(permutations))
    return observed, (exceed + 1) / (permutations + 1)


@dataclass(frozen=True)
class _Answer:
    ok: bool
    tokens: int
    empty: bool
    refusal: bool
    distinct_2: float | None
    finish_reasons: tuple[str, ...]


class _Quality:
    def __init__(self, size: int) -> None:
        self.answers: deque[_Answer] = deque(maxlen=size)
        self.feedback: deque[float] = deque(maxlen=size)  # the latest ratings' scores (0..1)

    def summary(self) -> dict[str, Any]:
        answers = list(self.answers)
        n = len(answers)
        ok = [a for a in answers if a.ok]
        reasons = Counter(r for a in ok for r in a.finish_reasons)
        total_reasons = sum(reasons.values()) or 1
        distinct = [a.distinct_2 for a in ok if a.distinct_2 is not None]
        tokens = sorted(a.tokens for a in ok)
        return {
            "n": n,
            "error_rate": round(1 - len(ok) / n, 4) if n else None,
            "empty_rate": round(sum(a.empty for a in ok) / len(ok), 4) if ok else None,
            "refusal_rate": round(sum(a.refusal for a in ok) / len(ok), 4) if ok else None,
            "mean_output_tokens": round(sum(tokens) / len(tokens), 2) if tokens else None,
            "p95_output_tokens": tokens[min(len(tokens) - 1, int(0.95 * len(tokens)))] if tokens else None,
            "distinct_2": round(sum(distinct) / len(distinct), 4) if distinct else None,
            "finish_reasons": {r: round(c / total_reasons, 4) for r, c in sorted(reasons.items())},
            "feedback_n": len(self.feedback),
            "feedback_mean_score": round(sum(self.feedback) / len(self.feedback), 4) if self.feedback else None,
        }


@dataclass
class DriftResult:
    score: float
    p_value: float
    at: float


class _Drift:
    def __init__(self, reference_n: int, window_n: int) -> None:
        self.reference: list[np.ndarray] = []
        self.reference_n = reference_n
        self.current: deque[np.ndarray] = deque(maxlen=window_n)
        self.result: DriftResult | None = None
        self.fresh = 0  # embeddings added to the current window since the last test

    def add(self, vector: np.ndarray) -> None:
        if len(self.reference) < self.reference_n:
            self.reference.append(vector)
        else:
            self.current.append(vector)
            self.fresh += 1


class Monitors:
    def __init__(self, *, settings: MonitorSettings, embed: Embed | None, rng: random.Random | None = None) -> None:
        """Without `embed` (no embedding model served) there is no drift, only quality."""
        self._settings = settings
        self._embed = embed
        self._rng = rng or random.Random()
        self._np_rng = np.random.default_rng(self._rng.randrange(2**32))
        self._lock = threading.Lock()
        self._quality: dict[str, _Quality] = {}  # per version
        self._versions: dict[str, set[str]] = {}  # model -> versions seen
        self._pending: deque[tuple[str, str]] = deque(maxlen=max(64, settings.window_n))  # (model, prompt), sampled
        self._drift: dict[str, _Drift] = {}

    # -- on the request path: cheap and never raising ----------------------------------------

    def observe(
        self, *, model: str, version: str, prompt: str, outputs: list[str], finish_reasons: list[str | None], tokens: int, ok: bool,
    ) -> None:
        text = " ".join(outputs)
        answer = _Answer(
            ok=ok, tokens=tokens, empty=ok and not text.strip(), refusal=bool(_REFUSAL.search(text)) if ok else False,
            distinct_2=distinct_2(text) if ok else None, finish_reasons=tuple(r for r in finish_reasons if r),
        )
        with self._lock:
            self._quality.setdefault(version, _Quality(self._settings.quality_window)).answers.append(answer)
            self._versions.setdefault(model, set()).add(version)
            if self._embed is not None and prompt.strip() and self._rng.random() < self._settings.sample_rate:
                self._pending.append((model, prompt[:_MAX_PROMPT_CHARS]))

    def observe_feedback(self, *, model: str, version: str, score: float) -> None:
        """A rating (0..1) of an answer `version` gave."""
        with self._lock:
            self._quality.setdefault(version, _Quality(self._settings.quality_window)).feedback.append(score)
            self._versions.setdefault(model, set()).add(version)

    # -- off the request path ------------------------------------------------------------------

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._settings.interval_s)
            try:
                await self.update()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the embedding model busy or away: the prompts wait for the next round
                log.warning("drift monitor: could not update: %s", e)

    async def update(self) -> int:
        """Embed the sampled prompts and test each model whose window grew; how many were embedded."""
        if self._embed is None:
            return 0
        with self._lock:
            batch = list(self._pending)
            self._pending.clear()
        if not batch:
            return 0
        try:
            vectors = await self._embed([prompt for _, prompt in batch])
        except Exception:
            with self._lock:  # put them back (the deque's bound drops the oldest if it must)
                self._pending.extendleft(reversed(batch))
            raise
        changed: set[str] = set()
        with self._lock:
            for (model, _), vector in zip(batch, vectors, strict=True):
                drift = self._drift.setdefault(model, _Drift(self._settings.reference_n, self._settings.window_n))
                drift.add(np.asarray(vector, dtype=np.float32))
                changed.add(model)
        for model in changed:
            await asyncio.to_thread(self._test, model)
        return len(batch)

    def _test(self, model: str) -> None:
        with self._lock:
            drift = self._drift[model]
            if len(drift.reference) < self._settings.min_n or len(drift.current) < self._settings.min_n or not drift.fresh:
                return
            reference, current = np.stack(drift.reference), np.stack(list(drift.current))
            drift.fresh = 0
        score, p_value = mmd_test(reference, current, permutations=self._settings.permutations, rng=self._np_rng)
        with self._lock:
            drift.result = DriftResult(score=round(score, 6), p_value=round(p_value, 6), at=time.time())

    def reset_reference(self, model: str, *, pin_current: bool) -> None:
        """`pin_current`: the current window becomes the reference; else the next `reference_n`
        sampled prompts do (after a promotion, say)."""
        with self._lock:
            drift = self._drift.setdefault(model, _Drift(self._settings.reference_n, self._settings.window_n))
            drift.reference = list(drift.current) if pin_current else []
            drift.current.clear()
            drift.result, drift.fresh = None, 0

    # -- what operators read ---------------------------------------------------------------------

    def models(self) -> list[str]:
        with self._lock:
            return sorted(set(self._versions) | set(self._drift))

    def report(self, model: str) -> dict[str, Any] | None:
        with self._lock:
            versions = sorted(self._versions.get(model, ()))
            drift = self._drift.get(model)
            if not versions and drift is None:
                return None
            quality = {v: self._quality[v].summary() for v in versions}
            drift_body: dict[str, Any] | None = None
            if self._embed is not None:
                result = drift.result if drift else None
                drift_body = {
                    "score": result.score if result else None,
                    "p_value": result.p_value if result else None,
                    "threshold": self._settings.p_threshold,
                    "alert": bool(result and result.p_value < self._settings.p_threshold),
                    "reference_n": len(drift.reference) if drift else 0,
                    "current_n": len(drift.current) if drift else 0,
                    "tested_at": result.at if result else None,
                }
        return {"model": model, "drift": drift_body, "quality": quality}

    def drift_scores(self) -> dict[str, tuple[float, bool]]:
        """(MMD², alert) per model with a test result, for the metrics."""
        with self._lock:
            return {
                m: (d.result.score, d.result.p_value < self._settings.p_threshold)
                for m, d in self._drift.items() if d.result is not None
            }
