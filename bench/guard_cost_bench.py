"""What the guardrails cost: the gateway's throughput with input and output guards on against off.

One run starts the fast mock upstream (bench/_mock_upstream.py) and two `genloom serve` processes in
front of it on the same config, one without guardrails and one with prompt-injection blocking and PII
redaction (restored in the answer) on input, PII redaction and unsafe-content blocking on output. Each
round measures both servers, plain and streamed chat at each concurrency, with the gateway bench's
4-word prompt and with a realistic ~1,500-character message that holds an email address (so the PII
scanner redacts and the injection classifier reads real text); rounds alternate the servers' order so
that drift hits them alike. Afterwards the scanners the policy runs are timed in-process on the same
texts, to say where the time goes. Run it as `genloom bench guards --help`.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gateway_bench  # noqa: E402
from _docs import write_section  # noqa: E402
from _mock_upstream import ANSWER  # noqa: E402
from gateway_bench import (  # noqa: E402
    ADMIN_KEY,
    MODEL,
    Row,
    Server,
    Target,
    fmt,
    genloom_config,
    genloom_tenant_key,
    ready,
    run_async,
    run_level,
    start,
    stop,
)
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name, free_port  # noqa: E402

SECTION = "## Guardrails' cost on the gateway"
OFF, ON = "guards off", "guards on"
GUARDS = {
    "input": {"prompt_injection": {"action": "block"}, "pii": {"action": "redact", "restore": True}},
    "output": {"pii": {"action": "redact"}, "unsafe": {"action": "block"}},
}
GOAL = 0.85  # guards on keep at least 85% of the throughput with them off
REALISTIC = (
    "Hi! I run a small online shop that sells handmade ceramics, and I need help answering a customer email. "
    "Here is what she wrote to us yesterday:\n\n"
    "\"Hello, I ordered a set of four blue stoneware mugs from your website on the 12th of last month. The parcel "
    "arrived on Tuesday, but one of the mugs had a crack running down the handle and another one was chipped at "
    "the rim. The box itself looked fine, so I think they may have been packed a little too loosely. I love the "
    "glaze and I would really like to keep the set complete, so I would prefer replacements rather than a refund "
    "if that is possible. I have kept the damaged mugs and the original packaging in case you need them back, and "
    "I can send photos if that helps. Could you let me know what the next steps are? You can reach me at "
    "maria.lindqvist@example.com, I check it every evening. Thank you, Maria\"\n\n"
    "We do have two of those mugs in stock, and we normally ask customers for a photo before we ship a "
    "replacement, but we never ask them to return broken pottery because the postage costs more than the mug. "
    "Please write a friendly reply of about 120 words that apologises for the damage, asks for a photo of the two "
    "mugs, promises to send the replacements within three working days of receiving it, tells her she can keep or "
    "recycle the broken ones, and thanks her for her patience. Keep the tone warm but professional, avoid "
    "exclamation marks, and sign it from the Harbour Clay team."
)
PROMPTS = {"short": gateway_bench.REQUEST["messages"][0]["content"], "realistic": REALISTIC}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench guards", description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="16,64", help="comma-separated concurrency levels")
    p.add_argument("--requests", type=int, default=1000, help="measured requests per round, prompt, mode, level and server")
    p.add_argument("--rounds", type=int, default=3, help="rounds (each measures both servers; the order alternates)")
    p.add_argument("--warmup", type=int, default=100, help="requests before each measurement, not counted (at least 2 x C)")
    p.add_argument("--prompts", default="short,realistic",
                   help=f"comma-separated, of: short (the gateway bench's {len(PROMPTS['short'])}-character prompt), "
                        f"realistic (a {len(REALISTIC):,}-character customer email with an email address)")
    p.add_argument("--level-timeout", type=float, default=300.0, help="seconds allowed for one measurement")
    p.add_argument("--max-concurrency", type=int, default=256, help="the remote model's max_concurrency")
    p.add_argument("--scanner-runs", type=int, default=300, help="in-process timed calls per scanner and text")
    p.add_argument("--docs", "--write", dest="docs", type=Path,
                   help=f"markdown file whose '{SECTION}' section is replaced with the result")
    args = p.parse_args(argv)
    args.levels = [int(c) for c in args.clients.split(",") if c.strip()]
    args.prompt_names = [name.strip() for name in args.prompts.split(",") if name.strip()]
    if unknown := [n for n in args.prompt_names if n not in PROMPTS]:
        p.error(f"--prompts: unknown {', '.join(unknown)}; choose from {', '.join(PROMPTS)}")
    return args


def probe(target: Target, text: str, *, stream: bool) -> str:
    """One request's outcome in words: status, the x-genloom-guard header, and an error's code."""
    body = gateway_bench.REQUEST | {"messages": [{"role": "user", "content": text}], "stream": stream}
    with httpx.Client(base_url=f"http://{target.host}:{target.port}", headers=target.headers, trust_env=False,
                      timeout=30) as c:
        r = c.post("/v1/chat/completions", json=body)
    said = f"{r.status_code}, x-genloom-guard: {r.headers.get('x-genloom-guard', 'none')}"
    if r.status_code != 200 or "content_blocked" in r.text:
        said += f", {r.text[:200]!r}"
    elif not stream and r.json()["choices"][0]["message"]["content"] != ANSWER:
        said += f", unexpected content {r.json()['choices'][0]['message']['content']!r:.100}"
    return said


def time_scanners(names: list[str], runs: int) -> list[str]:
    """Every built-in scanner timed and scored in-process on the texts the guarded server scans per request, and
    the guard engine's whole input and output scan under the policy (a streamed answer this short is scanned
    once, at its end). The scanners the policy does not run on a text are shown too, marked, for their scores."""
    from genloom.config import GuardrailSettings
    from genloom.guardrails.engine import builtin_guardrails
    from genloom.guardrails.pii import Placeholders

    guardrails = builtin_guardrails()
    guardrails.warm()
    policies = guardrails.policies(GuardrailSettings.model_validate(GUARDS))
    stage_in, stage_out = policies.stage("input"), policies.stage("output")

    def us(call) -> float:
        call()
        times = []
        for _ in range(runs):
            started = time.perf_counter_ns()
            call()
            times.append(time.perf_counter_ns() - started)
        return median(times) / 1000

    def score(scanner: str, text: str) -> str:
        """The highest-scoring category against its calibrated threshold."""
        best = max(guardrails.scanner(scanner).scan(text), key=lambda f: f.score)
        threshold = guardrails.threshold(scanner, best.category)
        return f"{best.category} {best.score:.3f} ({threshold:.2f}){' **over**' if best.score >= threshold else ''}"

    rows = ["| text | scanner | run by the policy | µs per call (median) | top score (threshold) |", "|---|---|---|---:|---|"]
    texts = [(f"{name} prompt ({len(PROMPTS[name]):,} chars)", PROMPTS[name], "input") for name in names]
    texts.append((f"answer ({len(ANSWER)} chars)", ANSWER, "output"))
    for label, text, stage in texts:
        for scanner in guardrails.names:
            runs_it = "yes" if scanner in GUARDS[stage] else "no"
            rows.append(f"| {label} | `{scanner}` | {runs_it} | {us(lambda s=scanner, t=text: guardrails.scanner(s).scan(t)):,.0f} "
                        f"| {score(scanner, text)} |")
        if stage == "input":
            whole = us(lambda t=text: guardrails.scan([t], stage_in, roles=["user"], placeholders=Placeholders()))
        else:
            whole = us(lambda t=text: guardrails.scan([t], stage_out))
        rows.append(f"| {label} | {stage} stage: the policy's scanners and redaction | | {whole:,.0f} | |")
    return rows


def guardrails_state() -> str:
    """A short hash of the guardrails package as run (code and weights), since it changes apart from commits."""
    import hashlib

    import genloom.guardrails

    root = Path(genloom.guardrails.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def spread(values: list[float], digits: int = 0) -> str:
    """The median, and the lowest and highest of the rounds."""
    return f"{median(values):,.{digits}f} ({min(values):,.{digits}f}–{max(values):,.{digits}f})"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.argv, args.code, args.guardrails = list(argv), code_state(), guardrails_state()
    load_before = os.getloadavg()[0]
    # Before the servers start, so that a scanner that cannot load fails the run at once, and the
    # timings are of the code the servers load a moment later.
    print("timing the scanners in-process ...", flush=True)
    scanner_rows = time_scanners(args.prompt_names, args.scanner_runs)
    rows: dict[tuple[str, bool, int, str], list[Row]] = {}  # (prompt, stream, clients, server): one per round
    failed: dict[tuple[str, bool, int, str], str] = {}
    probes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="genloom-guard-cost-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mock_port = free_port()
        mock = Server("mock", [sys.executable, str(Path(__file__).with_name("_mock_upstream.py")), "--port", str(mock_port)],
                      tmp / "mock.log")
        running: list[Server] = [mock]
        targets: dict[str, Target] = {}
        try:
            start(mock, dict(os.environ))
            for i, (name, extra) in enumerate(((OFF, {}), (ON, {"guardrails": GUARDS}))):
                port = free_port()
                config = genloom_config(f"http://127.0.0.1:{mock_port}", args.max_concurrency) | extra
                (tmp / f"{i}.yaml").write_text(yaml.safe_dump(config))
                server = Server(name, [sys.executable, "-m", "genloom.cli", "serve", "--config", str(tmp / f"{i}.yaml"),
                                       "--host", "127.0.0.1", "--port", str(port)], tmp / f"{i}.log")
                start(server, os.environ | {"GENLOOM_DATA_DIR": str(tmp / f"data-{i}"), "GENLOOM_ADMIN_KEY": ADMIN_KEY})
                running.append(server)
                if not ready(server, f"http://127.0.0.1:{port}/readyz"):
                    return 1
                key = genloom_tenant_key(f"http://127.0.0.1:{port}")
                assert server.proc is not None
                targets[name] = Target(name, "127.0.0.1", port, MODEL, {"Authorization": f"Bearer {key}"}, server.proc.pid)
            for name in args.prompt_names:
                for stream in (False, True):
                    said = probe(targets[ON], PROMPTS[name], stream=stream)
                    probes.append(f"{name} prompt, {'streamed' if stream else 'plain'}: {said}")
                    print(f"probe, guards on: {probes[-1]}", flush=True)
            for round_ in range(args.rounds):
                order = [OFF, ON] if round_ % 2 == 0 else [ON, OFF]
                for name in args.prompt_names:
                    request = gateway_bench.REQUEST | {"messages": [{"role": "user", "content": PROMPTS[name]}]}
                    for stream in (False, True):
                        for clients in args.levels:
                            for server_name in order:
                                key = (name, stream, clients, server_name)
                                if key in failed:
                                    continue
                                try:
                                    row = run_async(run_level(targets[server_name], stream=stream, clients=clients,
                                                              total=args.requests, warmup=args.warmup,
                                                              timeout_s=args.level_timeout, request=request))
                                except RuntimeError as e:
                                    failed[key] = str(e)
                                    print(f"  {e}", file=sys.stderr, flush=True)
                                    continue
                                rows.setdefault(key, []).append(row)
                                print(f"round {round_ + 1} {name} {'stream' if stream else 'plain'} C={clients} "
                                      f"{server_name}: {row.requests_per_s:,.0f} req/s, p50 {fmt(row.p50_ms, 1)} ms, "
                                      f"p99 {fmt(row.p99_ms, 1)} ms, server CPU {row.server_cpu_ms_per_request or 0:.3f} "
                                      f"ms/request, errors {row.errors}"
                                      + (f" ({row.first_error})" if row.first_error else ""), flush=True)
        finally:
            for server in reversed(running):
                stop(server)
    table = ["| prompt | mode | C | req/s off | req/s on | on/off req/s | p50 / p99 ms off | p50 / p99 ms on "
             "| server CPU ms/request off | on | on/off CPU | errors (off / on) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts: dict[str, list[float]] = {}  # prompt: the median on/off throughput of each mode and level
    errors = []
    for name in args.prompt_names:
        for stream in (False, True):
            for clients in args.levels:
                mode = "streamed" if stream else "plain"
                off, on = rows.get((name, stream, clients, OFF), []), rows.get((name, stream, clients, ON), [])
                for server_name in (OFF, ON):
                    if why := failed.get((name, stream, clients, server_name)):
                        errors.append(f"{name} {mode} C={clients} {server_name}: not measured: {why}")
                if not off or not on:
                    table.append(f"| {name} | {mode} | {clients} | — | — | — | — | — | — | — | — | not measured |")
                    continue
                # Each round's on/off pair ran back to back, so the ratio is taken per round.
                speed = [b.requests_per_s / a.requests_per_s for a, b in zip(off, on)]
                cpu = [b.server_cpu_ms_per_request / a.server_cpu_ms_per_request for a, b in zip(off, on)
                       if a.server_cpu_ms_per_request and b.server_cpu_ms_per_request]
                verdicts.setdefault(name, []).append(median(speed))
                for server_name, measured in ((OFF, off), (ON, on)):
                    for r in measured:
                        if r.errors:
                            errors.append(f"{name} {mode} C={clients} {server_name}: {r.errors} errors ({r.first_error})")
                table.append(
                    f"| {name} | {mode} | {clients} | {spread([r.requests_per_s for r in off])} "
                    f"| {spread([r.requests_per_s for r in on])} | {spread(speed, 3)} "
                    f"| {median(r.p50_ms or 0 for r in off):.1f} / {median(r.p99_ms or 0 for r in off):.1f} "
                    f"| {median(r.p50_ms or 0 for r in on):.1f} / {median(r.p99_ms or 0 for r in on):.1f} "
                    f"| {spread([r.server_cpu_ms_per_request or 0 for r in off], 2)} "
                    f"| {spread([r.server_cpu_ms_per_request or 0 for r in on], 2)} "
                    f"| {spread(cpu, 3) if cpu else '—'} "
                    f"| {sum(r.errors for r in off)} / {sum(r.errors for r in on)} |")
    met = {name: bool(ratios) and min(ratios) >= GOAL for name, ratios in verdicts.items()}
    command = " ".join(["genloom bench guards", *(shlex.quote(a) for a in args.argv)])
    lines = [
        SECTION, "",
        f"`{command}`, {datetime.date.today().isoformat()}, {args.code} (src/genloom/guardrails, code "
        f"and weights: sha256 {args.guardrails}), on {cpu_name()} ({os.cpu_count()} cores), "
        f"Python {platform.python_version()}, 1-minute load average {load_before:.2f} before the run. Two `genloom serve` "
        f"processes in front of the same mock upstream (`bench/_mock_upstream.py`, an 8-token answer at once) with the "
        f"gateway bench's config (`genloom bench gateway`: auth, a premium tenant's key, rate limiter and queue on, "
        f"`temperature: 1.0` so the response cache never answers), one of them with:", "",
        "```yaml", yaml.safe_dump({"guardrails": GUARDS}, sort_keys=False).strip(), "```", "",
        f"{args.rounds} rounds; in each, per prompt, mode (plain, streamed) and concurrency, {args.warmup} warm-up and "
        f"{args.requests} measured requests to each server back to back, the order alternating from round to round. "
        f"Prompts: short, the gateway bench's \"{PROMPTS['short']}\"; realistic, a {len(REALISTIC):,}-character customer "
        "email pasted with a request to draft a reply, holding one email address. Every answer is checked to be the "
        "mock's text. Figures are the median of the rounds with the lowest and highest in brackets; on/off is taken "
        "per round (the pair ran back to back) and then summarised the same way. Server CPU is the user + system "
        "time of the server's process per request.", "",
        *table, "",
        "Target (the issue): guards on keep at least 85% of the throughput with them off, at every mode and "
        "concurrency (median of the rounds' on/off): " + "; ".join(
            f"{name} prompt {'met' if met[name] else 'missed'} (lowest {min(verdicts[name]):.3f})" for name in verdicts)
        + ".", "",
        "Probe of the guarded server before the rounds (one request each): " + "; ".join(probes) + ".", "",
    ]
    if errors:
        lines += ["Errors:", "", *(f"- {e}" for e in errors), ""]
    lines += [
        f"Where the time goes: the scanners timed in-process ({args.scanner_runs} calls each, one thread, before the "
        "servers start) on the texts the guarded server scans per request, with each text's top score against the "
        "threshold the gateway applies to it (`Guardrails.threshold`). The input stage runs the injection and PII "
        "scanners over the user message and redacts; the output stage runs PII and unsafe over the answer (streamed, "
        f"its {len(ANSWER)} characters are scanned once, at the end). The scanners the policy does not run on a text "
        "are shown for their scores. Per-scanner latency on a short message and on ~2,000 characters is in the "
        "scanners' own sections (`bench/guard_bench.py`, `bench/guard_scanners_bench.py`).",
        "", *scanner_rows, "",
    ]
    text = "\n".join(lines)
    print("\n" + text, flush=True)
    if args.docs:
        write_section(args.docs, SECTION, text)
        print(f"wrote {args.docs}")
    return 0 if all(met.values()) and not errors else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
