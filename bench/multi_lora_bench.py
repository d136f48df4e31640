"""Many LoRA adapters in one batch, at the runtime level: tokens/s of greedy generation for a
batch of 32 rows of the built-in text model (or any local one), all on the base, against the
same batch with 8 adapters mixed across its rows through `genloom.runtimes.multi_lora.MultiLora`,
and against PEFT's own mixed-adapter generation (`generate(adapter_names=...)`) on the same
machine. The adapters are random LoRA weights of rank 8 on every linear layer (their values do
not change the cost). `transformers`' `generate` drives all three, so this measures the adapter
arithmetic, not Genloom's continuous batcher (which runs adapter rows through MultiLora, but the
server does not route fine-tuned versions into their base's batch yet).

    genloom bench multi-lora --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import publish  # noqa: E402
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name  # noqa: E402

SECTION = "## Many LoRA adapters in one batch (runtime level)"
GOAL = 0.7  # mixed adapters keep at least this share of the base-only tokens/s (the issue)


def parse_args(argv: list[str]) -> argparse.Namespace:
    from genloom.config.settings import BUILTIN_MODELS_DIR

    p = argparse.ArgumentParser(prog="genloom bench multi-lora", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=BUILTIN_MODELS_DIR / "genloom-text-mini")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--docs", type=Path)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genloom.runtimes.multi_lora import LoraWeights, MultiLora

    args = parse_args(argv)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    prompt = tok.apply_chat_template([{"role": "user", "content": "Tell me a short story about a lighthouse."}],
                                     add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids, mask = prompt["input_ids"].repeat(args.rows, 1), prompt["attention_mask"].repeat(args.rows, 1)
    names = [f"a{i}" for i in range(args.adapters)]
    plan = [names[i % len(names)] for i in range(args.rows)]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def load():
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()

    def once(model, **extra) -> float:
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new_tokens,
                                 min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=pad, **extra)
        assert out.shape[1] - ids.shape[1] == args.new_tokens
        return args.rows * args.new_tokens / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as tmp:
        for name in names:  # random, non-zero adapters (init_lora_weights=False)
            peft_model = get_peft_model(load(), LoraConfig(r=args.rank, lora_alpha=2 * args.rank, target_modules="all-linear",
                                                           init_lora_weights=False))
            peft_model.save_pretrained(Path(tmp) / name)
        base = load()
        multi = MultiLora(base)
        for name in names:
            multi.add(name, LoraWeights.load(Path(tmp) / name))
        peft = PeftModel.from_pretrained(load(), str(Path(tmp) / names[0]), adapter_name=names[0])
        for name in names[1:]:
            peft.load_adapter(str(Path(tmp) / name), adapter_name=name)
        peft.eval()
        plain = load()  # a model with no hooks at all: the base-only baseline

        def run(config: str) -> float:
            if config == "base":
                return once(plain)
            if config == "none":
                with multi.rows([None] * args.rows):
                    return once(base)
            if config == "multi":
                with multi.rows(plan):
                    return once(base)
            return once(peft, adapter_names=plan)

        configs = ["base", "none", "multi", "peft"]
        for config in configs:  # warm-up
            run(config)
        seen: dict[str, list[float]] = {c: [] for c in configs}
        for r in range(args.repeats):  # interleaved, the order turning each round, so drift hits all alike
            for config in configs[r % 4:] + configs[:r % 4]:
                seen[config].append(run(config))
        base_tps, base_through_multi_tps, multi_tps, peft_tps = (statistics.median(seen[c]) for c in configs)
    parameters = sum(p.numel() for p in base.parameters())
    ratio = multi_tps / base_tps
    lines = [
        f"`{' '.join(['genloom bench multi-lora', *map(shlex.quote, argv)])}`, {datetime.date.today()}, {code_state()}, on "
        f"{cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}, torch {torch.__version__}. "
        f"`{args.model.name}` ({parameters / 1e6:.1f} M parameters), a batch of {args.rows} identical prompts, "
        f"{args.new_tokens} greedy tokens each, median of {args.repeats} rounds (the four batches interleaved, their order turning) after a warm-up; {args.adapters} random LoRA "
        f"adapters (r={args.rank}, every linear layer) assigned to the rows in turn.",
        "",
        "| batch | tokens/s | vs base only |",
        "|---|---:|---:|",
        f"| base only | {base_tps:,.0f} | 1.00 |",
        f"| base only, through MultiLora (no adapter on any row) | {base_through_multi_tps:,.0f} | {base_through_multi_tps / base_tps:.2f} |",
        f"| {args.adapters} adapters mixed, MultiLora | {multi_tps:,.0f} | {ratio:.2f} |",
        f"| {args.adapters} adapters mixed, PEFT `generate(adapter_names=...)` | {peft_tps:,.0f} | {peft_tps / base_tps:.2f} |",
        "",
        f"Target (the issue): mixed adapters keep at least {GOAL}x of base-only tokens/s: "
        f"{'met' if ratio >= GOAL else 'missed'} ({ratio:.2f}x) at the runtime level. Not yet measured through "
        "`genloom serve`: the server does not route fine-tuned versions into their base's batch yet.",
    ]
    publish(SECTION, lines, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
