"""Text generation benchmark: genloom serve against transformers serve and in-process references.

On one model (by default a random ~5.5M-parameter Llama), in one run: sequential `generate` and
one static batch in-process, then the same streaming client load against `genloom serve` and
against `transformers serve --continuous-batching`. Run it as `genloom bench text --help` or
`python bench/text_bench.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# The CLI loads this file by path, so its sibling modules are found through the file's folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from _load import LevelResult, RequestResult, percentile, run_levels  # noqa: E402

SECTION = "## Text generation"
PROMPTS = [
    "What is a Python list?", "How do I open a file for reading?", "What does the with statement do?",
    "Explain what a dictionary is.", "How can I sort a list of tuples by the second item?",
    "What is the difference between a tuple and a list?", "How do I read environment variables?",
    "What is a generator?", "Why would I use a set?", "How do I format a float with two decimals?",
    "What does the yield keyword do?", "How do I catch several exceptions at once?",
    "What is a lambda function?", "How do I join a list of strings?", "What is a virtual environment?",
    "How does slicing work on strings?", "What is the purpose of __init__?", "How do I copy a list?",
    "What is a decorator?", "How do I run a shell command from Python?", "What does enumerate return?",
    "How do I merge two dictionaries?", "What is an iterator?", "How do I parse JSON text?",
    "What is the global interpreter lock?", "How can I time a piece of code?", "What does zip do?",
    "How do I remove duplicates from a list?", "What is a context manager?",
    "How do I write a unit test?", "What is the difference between is and ==?", "How do I reverse a string?",
]


@dataclass
class Row:
    name: str
    clients: int | None
    requests: int
    errors: int
    tokens_per_s: float
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None
    counted_by: str


@dataclass
class ServerRun:
    name: str
    command: list[str]
    levels: list[LevelResult]
    not_run: str | None = None


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench text", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, help="existing HF causal LM directory (default: build a random Llama)")
    p.add_argument("--clients", default="1,8,32", help="comma-separated concurrency levels")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens generated per request")
    p.add_argument("--requests-per-client", type=int, default=2, help="requests per level = max(this * C, min)")
    p.add_argument("--min-requests", type=int, default=16, help="lower bound of requests per level")
    p.add_argument("--batch-size", type=int, default=32, help="size of the in-process static batch")
    p.add_argument("--level-timeout", type=float, default=300.0, help="seconds allowed for one level")
    p.add_argument("--no-peer", action="store_true", help="skip transformers serve")
    p.add_argument("--write", type=Path, help="markdown file whose '## Text generation' section is replaced")
    p.add_argument("--json", type=Path, help="write raw results as JSON here")
    return p.parse_args(argv)


def build_model(out_dir: Path) -> Path:
    from genloom.builtin.text_model import TextModelConfig, save_random_model

    cfg = TextModelConfig(vocab_size=4096, hidden_size=256, num_layers=6, num_heads=8, num_kv_heads=4,
                          intermediate_size=704)
    return save_random_model(out_dir, cfg, max_context=512)


def run_references(model_dir: Path, max_tokens: int, batch_size: int) -> tuple[list[Row], int]:
    """Sequential batch-1 `generate` over every prompt, then one left-padded static batch (median of 3)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    params = sum(p.numel() for p in model.parameters())
    encoded = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True)["input_ids"]
               for p in PROMPTS]
    # min_new_tokens keeps EOS away, so every request generates exactly max_tokens.
    settings = dict(do_sample=False, max_new_tokens=max_tokens, min_new_tokens=max_tokens,
                    pad_token_id=tokenizer.pad_token_id)

    def generate(batch: list[list[int]]) -> tuple[int, float]:
        inputs = tokenizer.pad({"input_ids": batch}, padding_side="left", return_tensors="pt")
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, **settings)
        return (out.shape[1] - inputs["input_ids"].shape[1]) * len(batch), time.perf_counter() - start

    generate(encoded[:2])
    tokens, seconds = 0, 0.0
    for ids in encoded:
        n, s = generate([ids])
        tokens, seconds = tokens + n, seconds + s
    exact = "exact (min_new_tokens)"
    rows = [Row("sequential generate", 1, len(encoded), 0, tokens / seconds, None, None, exact)]
    batch = [encoded[i % len(encoded)] for i in range(batch_size)]
    runs = sorted(n / s for n, s in (generate(batch) for _ in range(3)))
    rows.append(Row(f"static batch {batch_size}", None, batch_size, 0, runs[1], None, None, exact))
    return rows, params


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = log_path.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"exited with code {proc.returncode}: {lines[-1]}")
        try:
            if httpx.get(url, timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s:.0f} s")


def serve_and_load(name: str, command: list[str], ready_path: str, port: int, model: str,
                   args: argparse.Namespace, log_path: Path) -> ServerRun:
    """Start one server, wait until ready, run every level against it, and always stop it by PID."""
    print(f"{name}: {shlex.join(command)}", flush=True)
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc: subprocess.Popen | None = None
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(proc, base_url + ready_path, log_path)
            levels = asyncio.run(run_levels(
                base_url=base_url, model=model, prompts=PROMPTS, levels=args.levels,
                min_requests=args.min_requests, per_client=args.requests_per_client,
                max_tokens=args.max_tokens, timeout_s=args.level_timeout,
            ))
            return ServerRun(name, command, levels)
        except Exception as e:  # a server that fails must not take the other figures down with it
            tail = log_path.read_text(errors="replace").strip().splitlines()[-10:]
            print(f"{name}: not run: {e}; its log ends:", *tail, sep="\n  ", file=sys.stderr, flush=True)
            return ServerRun(name, command, [], not_run=str(e))
        finally:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def level_rows(runs: list[ServerRun], tokenizer) -> list[Row]:
    """Count tokens by the servers' usage only if every request of every server reported it."""
    done = [r for run in runs for level in run.levels for r in level.done]
    by_usage = all(r.usage_tokens is not None for r in done)

    def count(r: RequestResult) -> int:
        return r.usage_tokens if by_usage else len(tokenizer.encode(r.content, add_special_tokens=False))

    rows = []
    for run in runs:
        for level in run.levels:
            ttfts = [r.ttft_s * 1000 for r in level.done if r.ttft_s is not None]
            tokens = sum(count(r) for r in level.done)
            rows.append(Row(run.name, level.clients, len(level.done), level.errors, tokens / level.wall_s,
                            percentile(ttfts, 50), percentile(ttfts, 99), "usage" if by_usage else "re-tokenized"))
    return rows


def targets(rows: list[Row], runs: list[ServerRun]) -> list[str]:
    ours = {r.clients: r for r in rows if r.name == "genloom"}
    peer = {r.clients: r for r in rows if r.name == "transformers serve"}
    static = next((r for r in rows if r.name.startswith("static batch")), None)
    verdict = {True: "met", False: "missed"}
    lines = [f"- {run.name} was not run: {run.not_run}" for run in runs if run.not_run]
    for c in (8, 32):
        if c in ours and c in peer and peer[c].tokens_per_s > 0:
            g, p = ours[c], peer[c]
            lines.append(f"- C={c}: tokens/s {g.tokens_per_s:,.0f} vs {p.tokens_per_s:,.0f} = "
                         f"{g.tokens_per_s / p.tokens_per_s:.2f}x the peer (target > 1x: "
                         f"{verdict[g.tokens_per_s > p.tokens_per_s]})")
            if g.ttft_p99_ms is not None and p.ttft_p99_ms is not None:
                lines.append(f"- C={c}: TTFT p99 {g.ttft_p99_ms:,.0f} ms vs {p.ttft_p99_ms:,.0f} ms "
                             f"(target lower than the peer: {verdict[g.ttft_p99_ms < p.ttft_p99_ms]})")
    if 32 in ours and static:
        ratio = ours[32].tokens_per_s / static.tokens_per_s
        lines.append(f"- C=32: {ours[32].tokens_per_s:,.0f} tokens/s = {ratio:.2f}x the {static.name} figure "
                     f"of {static.tokens_per_s:,.0f} (target >= 0.6x: {verdict[ratio >= 0.6]})")
    return lines


def table(rows: list[Row]) -> str:
    def ms(v: float | None) -> str:
        return "—" if v is None else f"{v:,.0f}"

    out = ["| Run | Clients | Requests | Errors | Tokens/s | TTFT p50 ms | TTFT p99 ms | Tokens counted by |",
           "|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        clients = "—" if r.clients is None else str(r.clients)
        out.append(f"| {r.name} | {clients} | {r.requests} | {r.errors} | {r.tokens_per_s:,.0f} | "
                   f"{ms(r.ttft_p50_ms)} | {ms(r.ttft_p99_ms)} | {r.counted_by} |")
    return "\n".join(out)


PEER_FLAGS = ["--device", "cpu", "--continuous-batching", "--attn-implementation", "sdpa", "--dtype", "float32"]


def run_servers(model_dir: Path, tmp: Path, args: argparse.Namespace) -> list[ServerRun]:
    port = free_port()
    config = tmp / "genloom.yaml"
    # Auth off, as transformers serve has none: the comparison is of serving, not of key checks.
    config.write_text("builtin_models: false\nauth: disabled\nmodels:\n  - name: bench-model\n"
                      f"    path: {json.dumps(str(model_dir))}\nruntime:\n  max_batch_size: 32\n")
    genloom = [sys.executable, "-m", "genloom.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(tmp / "data"), "--config", str(config)]
    runs = [serve_and_load("genloom", genloom, "/readyz", port, "bench-model", args, tmp / "genloom.log")]

    # Weights may be stored in float16 (PEER_FLAGS); float32 matches genloom's CPU default and the references.
    port = free_port()
    peer = [str(Path(sys.executable).with_name("transformers")), "serve", str(model_dir), *PEER_FLAGS,
            "--host", "127.0.0.1", "--port", str(port)]
    if args.no_peer:
        runs.append(ServerRun("transformers serve", peer, [], not_run="skipped with --no-peer"))
    else:
        # transformers serve knows a pinned model only by the path it was started with.
        log = tmp / "peer.log"
        runs.append(serve_and_load("transformers serve", peer, "/health", port, str(model_dir), args, log))
    return runs


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.levels = [int(c) for c in args.clients.split(",") if c.strip()]
    import torch
    import transformers
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.model_dir:
            model_dir = args.model_dir.resolve()
        else:
            print("building a random Llama ...", flush=True)
            model_dir = build_model(tmp / "model")
        print("in-process references ...", flush=True)
        ref_rows, params = run_references(model_dir, args.max_tokens, args.batch_size)
        runs = run_servers(model_dir, tmp, args)
        rows = level_rows(runs, AutoTokenizer.from_pretrained(model_dir)) + ref_rows

    command = "genloom bench text " + shlex.join(argv) if argv else "genloom bench text"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} CPUs ({cpu_name()}), torch {torch.__version__}, "
               f"transformers {transformers.__version__}; model {model_dir.name if args.model_dir else 'random Llama'}, "
               f"{params / 1e6:.2f}M parameters, float32; max_tokens {args.max_tokens}, greedy, "
               f"{len(PROMPTS)} one-sentence prompts cycled")
    target_lines = targets(rows, runs)
    section = "\n".join([
        SECTION, "", f"Command: `{command}`", "", f"Date: {date}", "", f"Machine: {machine}.", "",
        f"Peer: `transformers serve MODEL_DIR {shlex.join(PEER_FLAGS)}`. Server, clients and references "
        "share the machine; TTFT is request start to first non-empty content chunk.", "",
        table(rows), "", "Targets:", "", *target_lines,
    ])
    print("\n" + section, flush=True)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": command, "date": date, "machine": machine, "parameters": params,
            "rows": [dataclasses.asdict(r) for r in rows],
            "servers": [dataclasses.asdict(run) for run in runs], "targets": target_lines,
        }, indent=2, default=str))
        print(f"wrote {args.json}")
    return 1 if runs[0].not_run else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
