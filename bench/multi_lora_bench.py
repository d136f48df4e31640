"""Many LoRA adapters in one batch. At the runtime level: tokens/s of greedy generation for a
batch of 32 rows of the built-in text model (or any local one), all on the base, against the same
batch with 8 adapters mixed across its rows through `genloom.runtimes.multi_lora.MultiLora`, and
against PEFT's own mixed-adapter generation (`generate(adapter_names=...)`) on the same machine.
The adapters are random LoRA weights of rank 8 on every linear layer (their values do not change
the cost). `transformers`' `generate` drives all three, so this part measures the adapter
arithmetic alone.

Through the server (`--serve`): `genloom serve` with the base and the 8 adapters registered as
versions of their own, 32 concurrent clients (non-streaming chat, a distinct prompt each, so the
response cache never answers), all to the base, then spread over the 8 adapters in turn; and the
same mixed load on a server with `runtime.batch_adapters: false`, where each adapter version runs a
merged copy of the weights in a batch of its own (how it ran before adapters were batched).

    genloom bench multi-lora --docs docs/benchmarks.md
    genloom bench multi-lora --serve --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import asyncio
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
SERVE_SECTION = "## Many LoRA adapters in one batch (through genloom serve)"
GOAL = 0.7  # mixed adapters keep at least this share of the base-only tokens/s (the issue)


def parse_args(argv: list[str]) -> argparse.Namespace:
    from genloom.config.settings import BUILTIN_MODELS_DIR

    p = argparse.ArgumentParser(prog="genloom bench multi-lora", description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=BUILTIN_MODELS_DIR / "genloom-text-mini")
    p.add_argument("--random-llama", metavar="HIDDEN:LAYERS",
                   help="instead of --model, a Llama of random weights this wide and deep (the built-in's tokenizer)")
    p.add_argument("--rows", type=int, default=32)
    p.add_argument("--adapters", type=int, default=8)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--serve", action="store_true", help="measure through `genloom serve` instead (see above)")
    p.add_argument("--requests", type=int, default=256, help="--serve: requests per load")
    p.add_argument("--docs", type=Path)
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        if args.random_llama:
            args.model = random_llama(args.model, Path(scratch) / "random-llama", args.random_llama)
        if args.serve:
            return serve(args, argv)
        return runtime_level(args, argv)


def heading(section: str, args: argparse.Namespace) -> str:
    """A random model's figures go in a section of their own beside the built-in's."""
    return f"{section[:-1]}, random Llama {args.random_llama})" if args.random_llama else section


def random_llama(tokenizer_dir: Path, out: Path, shape: str) -> Path:
    """A Llama of random weights, HIDDEN wide and LAYERS deep (MLP 2.75x, heads of 64, 4 KV heads)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    hidden, layers = (int(x) for x in shape.split(":"))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=int(hidden * 2.75) // 64 * 64,
                         num_hidden_layers=layers, num_attention_heads=hidden // 64, num_key_value_heads=4,
                         max_position_embeddings=1024)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "genloom.json").write_text('{"max_context": 1024}')
    return out


def runtime_level(args: argparse.Namespace, argv: list[str]) -> int:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genloom.runtimes.multi_lora import LoraWeights, MultiLora

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
        f"{'met' if ratio >= GOAL else 'missed'} ({ratio:.2f}x) at the runtime level; through the server in the next section.",
    ]
    publish(heading(SECTION, args), lines, args.docs)
    return 0


def random_adapters(model_dir: Path, out: Path, count: int, rank: int) -> list[Path]:
    """`count` PEFT adapters with random non-zero weights on every linear layer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dirs = []
    for i in range(count):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        peft_model = get_peft_model(model, LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear",
                                                      init_lora_weights=False))
        peft_model.save_pretrained(out / f"a{i}")
        dirs.append(out / f"a{i}")
    return dirs


async def load(base_url: str, models: list[str], *, clients: int, total: int, max_tokens: int,
               tag: str = "") -> tuple[float, int, int]:
    """(completion tokens/s, requests answered, errors) of `total` requests from `clients`
    concurrent clients, request i to models[i % len(models)], each prompt distinct (`tag` keeps
    a warm-up's prompts apart from the measured ones, so the response cache never answers)."""
    import httpx

    counter, tokens, errors = 0, 0, 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal counter, tokens, errors
        while counter < total:
            i = counter
            counter += 1
            body = {"model": models[i % len(models)], "max_tokens": max_tokens, "ignore_eos": True, "temperature": 0,
                    "messages": [{"role": "user", "content": f"Story {tag}{i}: tell me about a lighthouse keeper."}]}
            r = await client.post("/v1/chat/completions", json=body)
            if r.status_code == 200:
                tokens += r.json()["usage"]["completion_tokens"]
            else:
                errors += 1

    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(base_url=base_url, timeout=300, limits=limits, trust_env=False) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(clients)))
        wall = time.perf_counter() - start
    return tokens / wall, total - errors, errors


def serve(args: argparse.Namespace, argv: list[str]) -> int:
    from _serve import serving

    clients = args.rows
    results: dict[str, tuple[float, int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        adapters = random_adapters(args.model, root / "adapters", args.adapters, args.rank)
        names = [f"tuned-{i}" for i in range(len(adapters))]
        for batched in (True, False):
            config = {
                "builtin_models": False, "data_dir": str(root / f"data-{batched}"), "auth": "disabled",
                "runtime": {"max_batch_size": clients, "batch_adapters": batched},
                "models": [{"name": "base", "path": str(args.model)}]
                + [{"name": n, "path": str(args.model), "adapter": str(a)} for n, a in zip(names, adapters)],
            }
            with serving(config, root, name=f"serve-{batched}") as base_url:
                loads = {"base": ["base"], "mixed": names} if batched else {"mixed": names}
                for label, models in loads.items():  # a warm-up, then the measured load
                    asyncio.run(load(base_url, models, clients=clients, total=clients, max_tokens=args.new_tokens, tag="warm-up "))
                    key = f"{label}-{'batched' if batched else 'merged'}"
                    results[key] = asyncio.run(load(base_url, models, clients=clients, total=args.requests, max_tokens=args.new_tokens))
                    print(label, batched, results[key], flush=True)
    base_tps = results["base-batched"][0]
    rows = [
        ("all to the base", "base-batched"),
        (f"spread over {args.adapters} adapter versions, in the base's batch", "mixed-batched"),
        (f"spread over {args.adapters} adapter versions, each a merged copy (`batch_adapters: false`)", "mixed-merged"),
    ]
    ratio = results["mixed-batched"][0] / base_tps
    lines = [
        f"`{' '.join(['genloom bench multi-lora', *map(shlex.quote, argv)])}`, {datetime.date.today()}, {code_state()}, on "
        f"{cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}. `genloom serve` with "
        f"`{args.model.name}` and {args.adapters} random LoRA adapters (r={args.rank}, every linear layer) registered as "
        f"versions of their own, `runtime.max_batch_size: {clients}`; {clients} concurrent clients, {args.requests} "
        f"non-streaming chat requests per load (after a warm-up of {clients}), {args.new_tokens} tokens each "
        "(`ignore_eos`), a distinct prompt each.",
        "",
        "| load | completion tokens/s | vs all to the base | errors |",
        "|---|---:|---:|---:|",
        *[f"| {label} | {results[key][0]:,.0f} | {results[key][0] / base_tps:.2f} | {results[key][2]} |" for label, key in rows],
        "",
        f"Target (the issue): mixed adapters keep at least {GOAL}x of base-only tokens/s: "
        f"{'met' if ratio >= GOAL else 'missed'} ({ratio:.2f}x) through the server.",
    ]
    publish(heading(SERVE_SECTION, args), lines, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
