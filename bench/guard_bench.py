"""What the guardrail scanners catch, what they wrongly flag, and what they cost per request.

One mode per scanner (`--injection` now; `--pii` and `--unsafe` slot into MODES the same way).
Each mode scores its held-out data, the outside development set ../shared/data/guard-dev.jsonl
(read only, never trained on) and times the scanner in-process on a ~512-token prompt and a short
one. With `--docs FILE` each mode's section of that markdown file is replaced.

    python bench/guard_bench.py --injection --docs docs/benchmarks.md

The injection mode needs the held-out split that `tools/guardrails/build_injection_data.py`
writes to ~/.cache/genloom-guard-data (without it the held-out rows are reported missing)."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEV_SET = ROOT.parent / "shared" / "data" / "guard-dev.jsonl"
CACHE = Path.home() / ".cache" / "genloom-guard-data"

# A ~512-token prompt (2,500 characters of ordinary English: a pasted report and a request).
LONG_PROMPT = ("Please summarise the following quarterly report for the board in five bullet points.\n\n" + " ".join(
    f"In quarter {q}, the {team} team {verb} the {thing}, which {effect}." for q, team, verb, thing, effect in (
        (i % 4 + 1, ("sales", "support", "platform", "design", "finance")[i % 5],
         ("shipped", "reviewed", "migrated", "redesigned", "measured")[i % 5 - 1],
         ("billing service", "onboarding flow", "data warehouse", "mobile app", "pricing page")[i % 5 - 2],
         ("cut costs by four percent", "pleased most customers", "took longer than planned", "needs more testing",
          "raised revenue in two regions")[i % 5 - 3])
        for i in range(60))))[:2500]
SHORT_PROMPT = "How do I reverse a linked list in Python?"


@dataclass(frozen=True)
class Rates:
    recall: float  # attacks flagged
    fpr: float  # benign rows flagged
    over_defense: float  # benign rows with trigger words flagged
    attacks: int
    benign: int
    triggers: int


def rates(scores: np.ndarray, labels: np.ndarray, trigger: np.ndarray, threshold: float) -> Rates:
    flagged = scores >= threshold
    return Rates(recall=float(flagged[labels == 1].mean()) if (labels == 1).any() else float("nan"),
                 fpr=float(flagged[labels == 0].mean()), over_defense=float(flagged[trigger].mean()) if trigger.any() else float("nan"),
                 attacks=int((labels == 1).sum()), benign=int((labels == 0).sum()), triggers=int(trigger.sum()))


def latency(scan: Callable[[str], object], text: str, rounds: int) -> tuple[float, float]:
    """(p50, p95) in milliseconds of one scan of `text`, after a warm-up."""
    for _ in range(20):
        scan(text)
    times = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        scan(text)
        times.append(time.perf_counter_ns() - started)
    p50, p95 = np.percentile(times, [50, 95]) / 1e6
    return float(p50), float(p95)


def pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f}%"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().split("\n") if line]


def injection(args: argparse.Namespace) -> tuple[str, str, bool]:
    from genloom.guardrails.injection import InjectionScanner

    heading = "## Prompt-injection guard"
    full, rules = InjectionScanner(), InjectionScanner(use_classifier=False)
    threshold = full.threshold
    meta = json.loads((full._model_dir / "injection.json").read_text())

    def score(scanner: InjectionScanner, rows: list[dict]) -> np.ndarray:
        return np.array([scanner.scan(r["text"])[0].score for r in rows])

    held_path = args.cache / "injection" / "eval.jsonl"
    table = ["| data | scanner | attack recall | benign FPR | over-defense | rows (attack / benign / trigger-word benign) |",
             "|---|---|---|---|---|---|"]
    sweep = ["| threshold | held-out recall | held-out FPR | held-out over-defense | guard-dev recall | guard-dev FPR | guard-dev over-defense |",
             "|---|---|---|---|---|---|---|"]
    sets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]] = {}
    if held_path.exists():
        held = read_jsonl(held_path)
        sets["held-out split"] = (np.array([r["label"] for r in held]),
                                  np.array([r["label"] == 0 and r["kind"] == "benign_trigger" for r in held]), score(full, held), held)
    else:
        table.append(f"| held-out split | — | not found: run tools/guardrails/build_injection_data.py ({held_path}) | | | |")
    if args.dev.exists():
        dev = read_jsonl(args.dev)
        sets["guard-dev.jsonl"] = (np.array([int(r["label"] == "attack") for r in dev]),
                                   np.array([r["kind"] == "over_defense" for r in dev]), score(full, dev), dev)
    else:
        table.append(f"| guard-dev.jsonl | — | not found at {args.dev} | | | |")
    held_rates = None
    by_kind: dict[str, str] = {}
    for name, (labels, trigger, scores, rows) in sets.items():
        for scanner_name, s, t in (("rules + classifier", scores, threshold), ("rules only", score(rules, rows), rules.threshold)):
            r = rates(s, labels, trigger, t)
            table.append(f"| {name} | {scanner_name} | {pct(r.recall)} | {pct(r.fpr)} | {pct(r.over_defense)} | "
                         f"{r.attacks} / {r.benign} / {r.triggers} |")
            print(f"{name}, {scanner_name}: {r}", flush=True)
            if name == "held-out split" and s is scores:
                held_rates = r
        kinds: dict[str, list[int]] = {}
        for row, value in zip(rows, scores):
            counts = kinds.setdefault(f"{'attack' if row['label'] in (1, 'attack') else 'benign'} {row['kind']}", [0, 0])
            counts[0] += int(value >= threshold)
            counts[1] += 1
        by_kind[name] = ", ".join(f"{k} {f}/{n}" for k, (f, n) in sorted(kinds.items()))
    if len(sets) == 2:
        (hl, ht, hs, _), (dl, dt, ds, _) = sets.values()
        for t in sorted({round(threshold, 2), 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}):
            h, d = rates(hs, hl, ht, t), rates(ds, dl, dt, t)
            sweep.append(f"| {t:.2f}{' (shipped)' if t == round(threshold, 2) else ''} | {pct(h.recall)} | {pct(h.fpr)} | {pct(h.over_defense)} | {pct(d.recall)} | {pct(d.fpr)} | "
                         f"{pct(d.over_defense)} |")
    goals_met = held_rates is not None and held_rates.recall >= 0.95 and held_rates.fpr <= 0.02 and held_rates.over_defense <= 0.05

    long_p50, long_p95 = latency(full.scan, LONG_PROMPT, args.rounds)
    short_p50, short_p95 = latency(full.scan, SHORT_PROMPT, args.rounds)
    print(f"latency: {len(LONG_PROMPT)} chars p50 {long_p50:.2f} ms p95 {long_p95:.2f} ms; "
          f"short p50 {short_p50 * 1000:.0f} µs p95 {short_p95 * 1000:.0f} µs", flush=True)
    goals_met = goals_met and long_p95 <= 5.0
    weights = sum(f.stat().st_size for f in full._model_dir.glob("injection.*"))

    command = " ".join(["python bench/guard_bench.py", *(shlex.quote(a) for a in args.argv)])
    lines = [heading, "",
             f"`{command}`, {datetime.date.today().isoformat()}, {code_state()}, on {cpu_name()} ({os.cpu_count()} cores), "
             f"Python {platform.python_version()}; `InjectionScanner` in-process, threshold {threshold:.2f} (the calibration "
             f"split's pick: {meta.get('threshold_from_calibration', threshold):.2f}), weights {weights / 1024:.0f} KiB, trained on "
             f"data sha256 {meta['data']['sha256'][:12]}.", "",
             *table, "",
             "Attack recall: attacks scored at or above the threshold. Benign FPR: every benign row flagged. Over-defense: "
             "benign rows that use trigger words (held-out: the generated `benign_trigger` rows; guard-dev: NotInject's "
             "`over_defense` rows) flagged. The held-out split holds whole template and source families that training never "
             "saw; guard-dev.jsonl comes from outside the project (NotInject, BIPIA, MT-bench, awesome-chatgpt-prompts) and is "
             "used only here.", ""]
    if round(meta.get("threshold_from_calibration", threshold), 2) != round(threshold, 2):
        lines += ["The shipped threshold is not the calibration split's pick: it was set by hand with the threshold table below "
                  "in view (docs/guardrails.md says why), so the guard-dev.jsonl figures at it are not independent of that "
                  "choice.", ""]
    for name, kinds in by_kind.items():
        lines += [f"{name} by kind, rules + classifier (flagged / rows): {kinds}.", ""]
    if len(sweep) > 2:
        lines += ["The same scores at other thresholds (a policy's `threshold` overrides the shipped one):", "", *sweep, ""]
    lines += [f"Latency per `scan` ({args.rounds} runs, normalisation and decoding included): a {len(LONG_PROMPT):,}-character "
              f"(~512-token) prompt p50 {long_p50:.2f} ms, p95 {long_p95:.2f} ms (goal: p95 at most 5 ms); a short prompt "
              f"({len(SHORT_PROMPT)} characters) p50 {short_p50 * 1000:.0f} µs, p95 {short_p95 * 1000:.0f} µs.", ""]
    if held_rates is not None:
        lines += [f"Goals on the held-out split: recall at least 95% (measured {pct(held_rates.recall)}) at a benign FPR of at "
                  f"most 2% ({pct(held_rates.fpr)}), over-defense at most 5% ({pct(held_rates.over_defense)}): "
                  f"{'met' if goals_met else 'not all met'}.", ""]
    return heading, "\n".join(lines), goals_met


MODES: dict[str, Callable[[argparse.Namespace], tuple[str, str, bool]]] = {"injection": injection}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python bench/guard_bench.py", description=__doc__.split("\n\n")[0])
    for mode in MODES:
        p.add_argument(f"--{mode}", action="store_true", help=f"measure the {mode} scanner")
    p.add_argument("--docs", type=Path, help="markdown file whose sections are replaced with the results")
    p.add_argument("--dev", type=Path, default=DEV_SET, help="the outside development set (JSON lines)")
    p.add_argument("--cache", type=Path, default=CACHE, help="where the build scripts wrote the held-out splits")
    p.add_argument("--rounds", type=int, default=2000, help="timed scans per prompt")
    args = p.parse_args(argv)
    args.argv = argv
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    chosen = [m for m in MODES if getattr(args, m)] or list(MODES)
    ok = True
    for mode in chosen:
        heading, text, met = MODES[mode](args)
        print(text)
        ok &= met
        if args.docs:
            write_section(args.docs, heading, text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
