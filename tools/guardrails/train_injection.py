"""Train the prompt-injection scanner's classifier on the data `build_injection_data.py` made:
a logistic regression over the scanner's own features (`genloom.guardrails.injection.features`),
Platt scaling fitted on the calibration split, each strong rule's score set to its precision on
train + calibration, and the threshold picked on the calibration split (the lowest score at
which at most 1% of benign rows and 2.5% of the trigger-word benign rows are flagged: half the
goals, for margin).
Writes src/genloom/guardrails/models/injection.npz (float16 weights) and injection.json.

    pip install -e '.[train]'
    python tools/guardrails/train_injection.py [--cache ~/.cache/genloom-guard-data] [--threshold 0.6]"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression

from genloom.guardrails.injection import DEFAULT_SETTINGS, MIN_WORDS, MODEL_DIR, RULES, Settings, rule_hits, windows
from genloom.guardrails.normalize import views

# Half the goals (at most 2% of benign rows and 5% of trigger-word rows flagged): the calibration
# split holds only ~200 template families, so a threshold picked right at the goal line lands
# above it on other data about half the time.
MAX_FPR = 0.01
MAX_OVER_DEFENSE = 0.025
C_GRID = (0.5, 1.0, 2.0, 4.0)


def load(cache: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (cache / "injection" / f"{split}.jsonl").read_text().split("\n") if line]


def row_views(row: dict) -> list[tuple[str, list, bool]]:
    """The views the scanner reads, each with its rule hits and whether the classifier scores it
    (not under MIN_WORDS words). An attack smuggled in tag characters has an innocent cover text as
    its plain view: that view is not labelled an attack, so it is not trained on."""
    out = []
    for v in views(row["text"]):
        cover = row["label"] == 1 and row["kind"] == "obfuscated:tags" and v.how == "normalized"
        out.append((v.text, rule_hits(v.text), len(v.text.split()) >= MIN_WORDS and not cover))
    return out


@dataclass
class Matrix:
    x: csr_matrix  # one row per window of each classified view of each data row
    labels: np.ndarray
    owner: np.ndarray  # the data row each matrix row came from
    fit: np.ndarray  # trained on: every window of a benign row, only the whole views of an attack
    strong: list[list[int]]  # the strong rules hit, per data row


def matrix(rows: list[dict], settings: Settings) -> Matrix:
    # Which window of an attack document holds the injection is not known, so an attack's
    # chunks are scored (calibration sees the scanner's real max) but not trained on.
    data, indices, indptr, labels, owner, fit, strong = [], [], [0], [], [], [], []
    for i, row in enumerate(rows):
        hit_strong: set[int] = set()
        for text, hits, classified in row_views(row):
            hit_strong |= {r for r, _ in hits if RULES[r].strong}
            if not classified:
                continue
            for w, (idx, values) in enumerate(windows(text, settings, hits)):
                indices.append(idx)
                data.append(values)
                indptr.append(indptr[-1] + len(idx))
                labels.append(row["label"])
                owner.append(i)
                fit.append(w == 0 or row["label"] == 0)
        strong.append(sorted(hit_strong))
    width = settings.buckets + len(RULES) + 1 + settings.embedding_dims
    x = csr_matrix((np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(len(labels), width))
    return Matrix(x, np.array(labels), np.array(owner), np.array(fit), strong)


def row_logits(x: csr_matrix, owner: np.ndarray, n: int, w: np.ndarray, b: float) -> np.ndarray:
    logits = np.full(n, -np.inf)
    np.maximum.at(logits, owner, x @ w + b)
    return logits


def platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    scored = np.isfinite(logits)
    lr = LogisticRegression(C=1e6, max_iter=1000).fit(logits[scored].reshape(-1, 1), labels[scored])
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def scores(logits: np.ndarray, strong: list[list[int]], a: float, b: float, rule_scores: dict[str, float]) -> np.ndarray:
    with np.errstate(over="ignore"):  # a row the classifier does not score has logit -inf: probability 0
        p = 1.0 / (1.0 + np.exp(-(a * logits + b)))
    for i, hits in enumerate(strong):
        for r in hits:
            p[i] = max(p[i], rule_scores[RULES[r].name])
    return p


def pick_threshold(p: np.ndarray, rows: list[dict]) -> float:
    benign = np.array([r["label"] == 0 for r in rows])
    trigger = np.array([r["label"] == 0 and r["kind"] == "benign_trigger" for r in rows])
    for t in np.round(np.arange(0.30, 0.991, 0.01), 2):
        if (p[benign] >= t).mean() <= MAX_FPR and (p[trigger] >= t).mean() <= MAX_OVER_DEFENSE:
            return float(t)
    return 0.99


def figures(p: np.ndarray, rows: list[dict], t: float) -> dict[str, float]:
    label = np.array([r["label"] for r in rows])
    trigger = np.array([r["label"] == 0 and r["kind"] == "benign_trigger" for r in rows])
    return {"recall": float((p[label == 1] >= t).mean()), "fpr": float((p[label == 0] >= t).mean()),
            "over_defense": float((p[trigger] >= t).mean())}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "genloom-guard-data")
    p.add_argument("--out", type=Path, default=MODEL_DIR)
    p.add_argument("--threshold", type=float, help="ship this threshold instead of the calibration split's pick "
                   "(recorded beside it; docs/guardrails.md says why the shipped one differs)")
    args = p.parse_args(argv)
    manifest = json.loads((args.cache / "injection" / "manifest.json").read_text())
    settings = DEFAULT_SETTINGS
    train, calib = load(args.cache, "train"), load(args.cache, "calibration")
    started = time.perf_counter()
    m_train, m_cal = matrix(train, settings), matrix(calib, settings)
    strong_train, strong_cal = m_train.strong, m_cal.strong
    x_fit, y_fit = m_train.x[m_train.fit], m_train.labels[m_train.fit]
    y_cal = np.array([r["label"] for r in calib])
    print(f"features: {x_fit.shape[0]} train windows, {m_cal.x.shape[0]} calibration windows ({time.perf_counter() - started:.0f} s)")

    # A strong rule scores what it is worth: its precision on the rows it fires on.
    rule_scores = {}
    for r, rule in enumerate(RULES):
        if rule.strong:
            fired = [row["label"] for row, hits in zip(train + calib, strong_train + strong_cal) if r in hits]
            rule_scores[rule.name] = round(min(0.99, (sum(fired) + 1) / (len(fired) + 2)), 3)
    print("strong rules' precision:", rule_scores)

    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000, class_weight="balanced", solver="liblinear", random_state=0).fit(x_fit, y_fit)
        w = model.coef_[0].astype(np.float16).astype(np.float64)  # score with the weights as shipped
        bias = float(model.intercept_[0])
        logits = row_logits(m_cal.x, m_cal.owner, len(calib), w, bias)
        a, b = platt(logits, y_cal)
        p_cal = scores(logits, strong_cal, a, b, rule_scores)
        t = pick_threshold(p_cal, calib)
        fig = figures(p_cal, calib, t)
        print(f"C={c}: threshold {t:.2f}, calibration {fig}")
        if best is None or fig["recall"] > best[0]["recall"]:
            best = (fig, c, w, bias, a, b, t)
    fig, c, w, bias, a, b, t = best

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "injection.npz", weights=w.astype(np.float16))
    meta = {
        "settings": {"buckets": settings.buckets, "char_ngrams": list(settings.char_ngrams), "word_ngrams": list(settings.word_ngrams),
                     "rule_value": settings.rule_value, "norm_floor": settings.norm_floor, "embedding_dims": settings.embedding_dims,
                     "embedding_value": settings.embedding_value},
        "rules": [r.name for r in RULES],
        "bias": bias,
        "platt": {"a": a, "b": b},
        "threshold": args.threshold if args.threshold is not None else t,
        "threshold_from_calibration": t,
        "rule_scores": rule_scores,
        "training": {"C": c, "class_weight": "balanced", "solver": "liblinear", "windows": int(x_fit.shape[0])},
        "calibration": {k: round(v, 4) for k, v in fig.items()},
        "data": {"sha256": manifest["sha256"], "seed": manifest["seed"], "splits": manifest["splits"],
                 "sources": [{k: s[k] for k in ("package", "version", "licence")} for s in manifest["sources"]]},
    }
    (args.out / "injection.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = sum(f.stat().st_size for f in args.out.glob("injection.*"))
    print(f"wrote {args.out}/injection.npz + injection.json ({size / 1024:.0f} KiB), C={c}, threshold {meta['threshold']:.2f} "
          f"(calibration's pick {t:.2f}), "
          f"calibration recall {fig['recall']:.3f} fpr {fig['fpr']:.3f} over-defense {fig['over_defense']:.3f}")
    return 0 if math.isfinite(bias) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
