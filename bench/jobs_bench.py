"""Scheduling and async-jobs benchmark: premium latency under 2x overload, and job-queue throughput.

Part 1 serves one model (by default a random ~5.5M-parameter Llama) with `genloom serve` and
measures premium realtime latency idle, then while free-tier async jobs arrive open-loop at twice
the server's measured job capacity, then the rate at which /v1/jobs accepts jobs. Part 2 runs the
job service, in-memory queue and SQLite job store in-process with a worker that generates nothing.
Run it as `genloom bench jobs --help` or `python bench/jobs_bench.py --help`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import datetime
import json
import os
import platform
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

# The CLI loads this file by path, so its sibling modules are found through the file's folder.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from _load import RequestResult, percentile  # noqa: E402
from text_bench import PROMPTS, build_model, cpu_name, free_port, wait_ready  # noqa: E402

SECTION = "## Scheduling and async jobs"
MODEL = "bench-model"
REFUSED = (429, 503)
OPEN_LOOP_OUTSTANDING = 256  # unanswered job POSTs the overload client allows itself


@dataclass
class Submitted:
    """The outcome of POSTing a number of jobs."""

    started_at: float  # unix time of the first POST
    wall_s: float = 0.0
    ids: list[str] = field(default_factory=list)
    refused: int = 0  # 429 or 503
    errors: int = 0
    first_error: str | None = None
    post_ms: list[float] = field(default_factory=list)  # every answered POST's latency
    post_at: list[float] = field(default_factory=list)  # and when it was sent, unix time


@dataclass
class LatencyRow:
    phase: str
    clients: int
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None
    ttft_p99_ms: float | None


@dataclass
class FreeRow:
    phase: str
    offered_per_s: float | None
    accepted: int
    refused: int
    errors: int
    completed: int
    seconds: float
    post_p50_ms: float | None
    post_p99_ms: float | None
    unfinished: int | None = None
    first_error: str | None = None
    post_p50_by_10s_ms: list[float | None] = field(default_factory=list)  # POST p50 per 10 s of the phase

    @property
    def completed_per_s(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class QueueRow:
    backend: str
    submitters: int
    jobs: int
    refused: int
    submitted_per_s: float
    completed: int
    completed_per_s: float | None


@dataclass
class Part1:
    latency: list[LatencyRow] = field(default_factory=list)
    free: list[FreeRow] = field(default_factory=list)
    http: QueueRow | None = None
    not_run: str | None = None
    stop_s: float | None = None  # SIGTERM to exit
    log_errors: list[str] = field(default_factory=list)  # the server log's ERROR lines


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench jobs", description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, help="existing HF causal LM directory (default: build a random Llama)")
    p.add_argument("--max-batch-size", type=int, default=32, help="runtime.max_batch_size of the server")
    p.add_argument("--reserved-rows", type=int, help="runtime.realtime_reserved_rows (default: a quarter of the batch)")
    p.add_argument("--async-rows-with-realtime", type=int,
                   help="runtime.async_rows_with_realtime (default: an eighth of the batch, at least 1)")
    p.add_argument("--max-tokens", type=int, default=32, help="tokens generated per premium request and free job")
    p.add_argument("--idle-requests", type=int, default=30, help="premium requests, one at a time, on an idle server")
    p.add_argument("--capacity-jobs", type=int, default=200, help="free jobs submitted at once to measure capacity")
    p.add_argument("--overload", type=float, default=2.0, help="free jobs offered per s, as a multiple of capacity")
    p.add_argument("--window", type=float, default=40.0, help="seconds of overload")
    p.add_argument("--ramp", type=float, default=5.0, help="seconds of overload before the premium clients start")
    p.add_argument("--premium-clients", type=int, default=2, help="premium clients sending back to back in overload")
    p.add_argument("--http-jobs", type=int, default=1000, help="jobs POSTed to measure the HTTP submit rate")
    p.add_argument("--http-clients", type=int, default=32, help="concurrent clients POSTing those jobs")
    p.add_argument("--queue-jobs", type=int, default=3000, help="jobs per level of the in-process queue benchmark")
    p.add_argument("--queue-submitters", default="1,32", help="comma-separated concurrent submitters, in-process")
    p.add_argument("--profile", type=Path, help="write a cProfile of the in-process runs (event loop thread) here")
    p.add_argument("--write", type=Path, help="markdown file whose '## Scheduling and async jobs' section is replaced")
    p.add_argument("--json", type=Path, help="write raw results as JSON here")
    return p.parse_args(argv)


def server_config(model_dir: Path, args: argparse.Namespace) -> dict:
    """Every setting the scheduling figures depend on, written out even where it is the default."""
    batch = args.max_batch_size
    return {
        "builtin_models": False,
        "models": [{"name": MODEL, "path": str(model_dir)}],
        "runtime": {
            "max_batch_size": batch,
            "realtime_reserved_rows": batch // 4 if args.reserved_rows is None else args.reserved_rows,
            "async_rows_with_realtime": (
                max(1, batch // 8) if args.async_rows_with_realtime is None else args.async_rows_with_realtime
            ),
            "realtime_grace_s": 2.0,
        },
        "queue": {
            "max_queued": 256, "max_queued_async": 10_000, "tenant_max_share": 0.5, "retry_after_s": 1,
            "tiers": {"premium": {"weight": 6, "max_wait_s": 10}, "standard": {"weight": 3, "max_wait_s": 30},
                      "free": {"weight": 1, "max_wait_s": 120}},
        },
        "jobs": {"max_attempts": 3, "lease_s": 30, "heartbeat_s": 10},
        # A short drain bounds shutdown: jobs still queued after the window stay queued, unrun.
        "server": {"drain_timeout_s": 5, "log_level": "warning"},
    }


def who(tier: str, tenant: str) -> dict[str, str]:
    return {"X-Genloom-Tier": tier, "X-Genloom-Tenant": tenant}


def chat_body(prompt: str, max_tokens: int) -> dict:
    # ignore_eos (a genloom extension, as in vLLM) makes every request generate exactly max_tokens.
    return {"model": MODEL, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "ignore_eos": True}


async def premium_call(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> RequestResult:
    """One streamed premium chat request; TTFT is the first non-empty content chunk."""
    body = chat_body(prompt, max_tokens) | {"stream": True, "stream_options": {"include_usage": True}}
    result = RequestResult(prompt=prompt, latency_s=0.0)
    start = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=who("premium", "vip")) as r:
            if r.status_code != 200:
                result.error = f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
            else:
                async for line in r.aiter_lines():
                    payload = line.removeprefix("data:").strip()
                    if not line.startswith("data:") or payload == "[DONE]":
                        continue
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        result.error = str(chunk["error"])[:200]
                        break
                    if result.ttft_s is None and any((c.get("delta") or {}).get("content") for c in chunk["choices"]):
                        result.ttft_s = time.perf_counter() - start
                    if chunk.get("usage"):
                        result.usage_tokens = chunk["usage"]["completion_tokens"]
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"[:200]
    result.latency_s = time.perf_counter() - start
    return result


async def submit_job(client: httpx.AsyncClient, prompt: str, max_tokens: int, tenant: str, out: Submitted) -> None:
    start, sent_at = time.perf_counter(), time.time()
    try:
        r = await client.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": chat_body(prompt, max_tokens)},
                              headers=who("free", tenant))
    except httpx.HTTPError as e:
        out.errors += 1
        out.first_error = out.first_error or f"{type(e).__name__}: {e}"[:200]
        return
    out.post_ms.append((time.perf_counter() - start) * 1000)
    out.post_at.append(sent_at)
    if r.status_code == 202:
        out.ids.append(r.json()["id"])
    elif r.status_code in REFUSED:
        out.refused += 1
    else:
        out.errors += 1
        out.first_error = out.first_error or f"HTTP {r.status_code}: {r.text[:200]}"


async def submit_many(
    client: httpx.AsyncClient, *, n: int, concurrency: int, tenant: str, max_tokens: int
) -> Submitted:
    """POST n jobs through `concurrency` clients as fast as the server accepts them."""
    out = Submitted(started_at=time.time())
    next_index = 0

    async def loop() -> None:
        nonlocal next_index
        while next_index < n:
            i = next_index
            next_index += 1
            await submit_job(client, PROMPTS[i % len(PROMPTS)], max_tokens, tenant, out)

    start = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    out.wall_s = time.perf_counter() - start
    return out


async def completed_jobs(client: httpx.AsyncClient, tenant: str) -> list[dict]:
    """Every completed job of `tenant`, paging through GET /v1/jobs."""
    jobs: list[dict] = []
    after = None
    while True:
        params = {"state": "completed", "limit": 100} | ({"after": after} if after else {})
        r = await client.get("/v1/jobs", params=params, headers=who("free", tenant))
        r.raise_for_status()
        page = r.json()
        jobs += page["data"]
        if not page["has_more"]:
            return jobs
        after = page["last_id"]


async def wait_completed(client: httpx.AsyncClient, tenant: str, n: int, timeout_s: float) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = await completed_jobs(client, tenant)
        if len(jobs) >= n or time.monotonic() > deadline:
            return jobs
        await asyncio.sleep(0.5)


def latency_row(phase: str, clients: int, results: list[RequestResult]) -> LatencyRow:
    done = [r for r in results if r.error is None]
    ms = [r.latency_s * 1000 for r in done]
    ttft = [r.ttft_s * 1000 for r in done if r.ttft_s is not None]
    return LatencyRow(phase, clients, len(results), len(results) - len(done), percentile(ms, 50), percentile(ms, 99),
                      percentile(ttft, 50), percentile(ttft, 99))


async def overload(client: httpx.AsyncClient, premium: httpx.AsyncClient, args: argparse.Namespace,
                   rate: float) -> tuple[list[RequestResult], FreeRow]:
    """Free jobs open-loop at `rate` per second for the window; premium clients back to back after the ramp."""
    out = Submitted(started_at=time.time())
    start = time.monotonic()
    end = start + args.window
    # Open loop: a POST starts on schedule whatever the earlier ones do; only this many may be outstanding.
    slots = asyncio.Semaphore(OPEN_LOOP_OUTSTANDING)
    posts: set[asyncio.Task] = set()
    premium_results: list[RequestResult] = []

    async def offer() -> None:
        k = 0
        while (due := start + k / rate) < end and time.monotonic() < end:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await slots.acquire()
            task = asyncio.create_task(submit_job(client, PROMPTS[k % len(PROMPTS)], args.max_tokens, "bulk", out))
            task.add_done_callback(lambda t: slots.release())
            posts.add(task)
            task.add_done_callback(posts.discard)
            k += 1

    async def premium_loop(offset: int) -> None:
        await asyncio.sleep(args.ramp)
        i = offset
        while time.monotonic() < end:
            premium_results.append(await premium_call(premium, PROMPTS[i % len(PROMPTS)], args.max_tokens))
            i += args.premium_clients

    await asyncio.gather(offer(), *(premium_loop(i) for i in range(args.premium_clients)))
    window_end = out.started_at + args.window
    if posts:
        await asyncio.wait(set(posts))
    done = await completed_jobs(client, "bulk")
    in_window = sum(1 for j in done if j["finished_at"] is not None and j["finished_at"] <= window_end)
    free = FreeRow(f"overload: {args.overload:g}x capacity for {args.window:g} s", rate, len(out.ids), out.refused,
                   out.errors, in_window, args.window, percentile(out.post_ms, 50), percentile(out.post_ms, 99),
                   unfinished=len(out.ids) - in_window, first_error=out.first_error,
                   post_p50_by_10s_ms=by_10s(out, args.window))
    return premium_results, free


def by_10s(out: Submitted, seconds: float) -> list[float | None]:
    """POST latency p50 of the POSTs sent in each 10 s of a phase."""
    buckets: list[list[float]] = [[] for _ in range(max(1, round(seconds / 10)))]
    for at, ms in zip(out.post_at, out.post_ms):
        buckets[min(len(buckets) - 1, int((at - out.started_at) // 10))].append(ms)
    return [percentile(b, 50) for b in buckets]


async def run_part1(base_url: str, args: argparse.Namespace) -> Part1:
    part = Part1()
    timeout = httpx.Timeout(120.0)
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with (httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, trust_env=False) as client,
                httpx.AsyncClient(base_url=base_url, timeout=timeout, trust_env=False) as premium):
        for prompt in PROMPTS[:2]:  # warm-up, not counted
            warm = await premium_call(premium, prompt, args.max_tokens)
            if warm.error:
                raise RuntimeError(f"warm-up request failed: {warm.error}")

        print(f"idle: {args.idle_requests} premium requests, one at a time ...", flush=True)
        idle = [await premium_call(premium, PROMPTS[i % len(PROMPTS)], args.max_tokens)
                for i in range(args.idle_requests)]
        part.latency.append(latency_row("idle", 1, idle))

        print(f"capacity: {args.capacity_jobs} free jobs at once ...", flush=True)
        sub = await submit_many(client, n=args.capacity_jobs, concurrency=32, tenant="capacity",
                                max_tokens=args.max_tokens)
        done = await wait_completed(client, "capacity", len(sub.ids), timeout_s=120)
        last = max((j["finished_at"] for j in done), default=sub.started_at)
        capacity = FreeRow(f"capacity: {args.capacity_jobs} jobs at once", None, len(sub.ids), sub.refused, sub.errors,
                           len(done), last - sub.started_at, percentile(sub.post_ms, 50), percentile(sub.post_ms, 99))
        part.free.append(capacity)
        if not done or sub.errors:
            raise RuntimeError(f"capacity run failed: {len(done)} of {args.capacity_jobs} completed; {sub.first_error}")

        print(f"http submit: {args.http_jobs} jobs (max_tokens 1), {args.http_clients} clients ...", flush=True)
        sub = await submit_many(client, n=args.http_jobs, concurrency=args.http_clients, tenant="submit", max_tokens=1)
        done = await wait_completed(client, "submit", len(sub.ids), timeout_s=60)
        last = max((j["finished_at"] for j in done), default=None)
        part.http = QueueRow(
            "HTTP: POST /v1/jobs to the part-1 server (real model, max_tokens 1)", args.http_clients, args.http_jobs,
            sub.refused + sub.errors, len(sub.ids) / sub.wall_s, len(done),
            len(done) / (last - sub.started_at) if last else None,
        )

        rate = args.overload * capacity.completed_per_s
        print(f"overload: free jobs at {rate:.1f}/s for {args.window:g} s, {args.premium_clients} premium clients "
              f"after {args.ramp:g} s ...", flush=True)
        premium_results, free = await overload(client, premium, args, rate)
        part.latency.append(latency_row(f"overload: free jobs at {args.overload:g}x capacity", args.premium_clients,
                                        premium_results))
        part.free.append(free)
    return part


def run_server(model_dir: Path, tmp: Path, args: argparse.Namespace) -> tuple[Part1, list[str]]:
    """Start `genloom serve`, run part 1 against it, and always stop it by PID."""
    port = free_port()
    config = tmp / "genloom.yaml"
    config.write_text(yaml.safe_dump(server_config(model_dir, args), sort_keys=False))
    command = [sys.executable, "-m", "genloom.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--data-dir", str(tmp / "data"), "--config", str(config)]
    print(f"genloom: {shlex.join(command)}", flush=True)
    log_path = tmp / "genloom.log"
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc: subprocess.Popen | None = None
    stop_s = None
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(proc, base_url + "/readyz", log_path)
            part = asyncio.run(run_part1(base_url, args))
        except Exception as e:  # part 2 needs no server: report this and go on
            tail = log_path.read_text(errors="replace").strip().splitlines()[-10:]
            print(f"genloom: part 1 not run: {e}; its log ends:", *tail, sep="\n  ", file=sys.stderr, flush=True)
            part = Part1(not_run=f"{type(e).__name__}: {e}")
        finally:
            if proc is not None and proc.poll() is None:
                stopping = time.perf_counter()
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                stop_s = time.perf_counter() - stopping
                print(f"genloom: stopped {stop_s:.1f} s after SIGTERM (exit code {proc.returncode})", flush=True)
    part.stop_s = stop_s
    part.log_errors = [line for line in log_path.read_text(errors="replace").splitlines()
                       if " ERROR " in line or line.startswith("ERROR:")]
    return part, command


def run_part2(
    model_dir: Path, tmp: Path, args: argparse.Namespace
) -> tuple[list[QueueRow], dict[str, float], dict[int, float], int]:
    from _embedded_jobs import load_runtime, run_embedded, time_position, time_store_calls

    runtime = load_runtime(model_dir)
    profiler = cProfile.Profile() if args.profile else None
    rows = []

    async def run_all() -> dict[str, float]:
        for submitters in args.submitters:
            print(f"in-process: {args.queue_jobs} jobs, {submitters} submitters ...", flush=True)
            run = await run_embedded(
                runtime=runtime, db_path=tmp / f"jobs-{submitters}.db", jobs=args.queue_jobs, concurrency=submitters,
                prompts=PROMPTS, max_tokens=args.max_tokens, timeout_s=120, profiler=profiler,
            )
            rows.append(QueueRow("embedded: JobService + InMemoryQueue + SQLite, no-op worker", submitters, run.jobs,
                                 run.refused, run.submitted_per_s, run.completed, run.completed_per_s))
        print("in-process: job store calls one at a time ...", flush=True)
        return await time_store_calls(db_path=tmp / "calls.db", n=200)

    calls = asyncio.run(run_all())
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"wrote {args.profile}")
    return rows, calls, time_position([1000, 3000]), runtime.info.parameters


def fmt(v: float | None, digits: int = 0) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def tables(part1: Part1, queue_rows: list[QueueRow], calls: dict[str, float], positions: dict[int, float]) -> list[str]:
    out = []
    if part1.latency:
        out += ["Premium realtime requests (streamed chat, tier premium, tenant vip):", "",
                "| Phase | Clients | Requests | Errors | Latency p50 ms | Latency p99 ms | TTFT p50 ms | TTFT p99 ms |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r.phase} | {r.clients} | {r.requests} | {r.errors} | {fmt(r.p50_ms)} | {fmt(r.p99_ms)} | "
                f"{fmt(r.ttft_p50_ms)} | {fmt(r.ttft_p99_ms)} |" for r in part1.latency]
        out.append("")
    if part1.free:
        out += ["Free async jobs (POST /v1/jobs, tier free):", "",
                "| Phase | Offered jobs/s | Accepted | Refused (429/503) | Errors | POST p50 ms | POST p99 ms "
                "| Completed | Seconds | Completed/s | Completed/min | Unfinished at end |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r.phase} | {fmt(r.offered_per_s, 1)} | {r.accepted} | {r.refused} | {r.errors} | "
                f"{fmt(r.post_p50_ms)} | {fmt(r.post_p99_ms)} | {r.completed} | {r.seconds:.1f} | "
                f"{r.completed_per_s:,.1f} | {r.completed_per_s * 60:,.0f} | {fmt(r.unfinished)} |"
                for r in part1.free]
        out.append("")
        for r in part1.free:
            if r.post_p50_by_10s_ms:
                steps = ", ".join(fmt(ms) for ms in r.post_p50_by_10s_ms)
                out += [f"POST p50 ms in each 10 s of the overload window, as the backlog grows: {steps}.", ""]
    rows = queue_rows + ([part1.http] if part1.http else [])
    out += ["Job-queue throughput:", "",
            "| Backend | Submitters | Jobs | Refused | Submitted/s | Completed | Completed/s |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    out += [f"| {r.backend} | {r.submitters} | {r.jobs} | {r.refused} | {r.submitted_per_s:,.0f} | {r.completed} | "
            f"{fmt(r.completed_per_s)} |" for r in rows]
    out += ["", "Job store calls one at a time (SqlJobStore on SQLite, mean of 200, ms per call): "
            + ", ".join(f"`{name}` {ms:.2f}" for name, ms in calls.items()) + "."]
    out += ["", "A waiting job's place in line (`InMemoryQueue.position`, which every view of a waiting job asks for, "
            "a POST /v1/jobs answer included), for the newest of N waiting jobs of one tenant: "
            + ", ".join(f"N = {n:,}: {ms:.1f} ms" for n, ms in positions.items()) + "."]
    return out


def targets(part1: Part1, queue_rows: list[QueueRow]) -> list[str]:
    verdict = {True: "met", False: "missed"}
    lines = [f"- part 1 was not run: {part1.not_run}"] if part1.not_run else []
    if len(part1.latency) == 2 and len(part1.free) == 2:
        idle, loaded = part1.latency
        if idle.p99_ms and loaded.p99_ms is not None:
            ratio = loaded.p99_ms / idle.p99_ms
            lines.append(f"- premium latency p99 under overload {loaded.p99_ms:,.0f} ms vs idle {idle.p99_ms:,.0f} ms "
                         f"= {ratio:.2f}x (target <= 1.5x: {verdict[ratio <= 1.5]}); p50 {fmt(loaded.p50_ms)} vs "
                         f"{fmt(idle.p50_ms)} ms = {loaded.p50_ms / idle.p50_ms:.2f}x")
        capacity, free = part1.free
        lines.append(f"- free jobs completed during overload: {free.completed} in {free.seconds:g} s = "
                     f"{free.completed_per_s * 60:,.0f}/min (target > 0: {verdict[free.completed > 0]}); capacity "
                     f"was {capacity.completed_per_s:,.1f} jobs/s")
        posted = free.accepted + free.refused + free.errors
        lines.append(f"- refused during overload: {free.refused} (429/503) and {free.errors} other errors of {posted} "
                     f"POSTs ({free.offered_per_s * free.seconds:,.0f} scheduled; the open loop holds at most "
                     f"{OPEN_LOOP_OUTSTANDING} unanswered); premium errors: {loaded.errors}"
                     + (f"; first error: {free.first_error}" if free.first_error else ""))
    if part1.log_errors:
        first = part1.log_errors[0][:300]
        lines.append(f"- the server logged {len(part1.log_errors)} ERROR lines; the first: `{first}`")
    for r in queue_rows:
        submitters = f"{r.submitters} submitter" + ("s" if r.submitters != 1 else "")
        lines.append(f"- embedded backend, {submitters}: {r.completed_per_s:,.0f} completed jobs/s "
                     f"(target >= 500: {verdict[r.completed_per_s >= 500 and r.completed == r.jobs]})")
    return lines


def code_state() -> str:
    """The commit measured, and whether src/ had uncommitted changes (others may be editing it)."""
    root = Path(__file__).resolve().parent.parent
    try:
        git = [subprocess.run(["git", *a], cwd=root, capture_output=True, text=True, check=True).stdout.strip()
               for a in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "src"])]
    except (OSError, subprocess.CalledProcessError):
        return "commit unknown"
    return f"commit {git[0]}" + (" with uncommitted changes in src/" if git[1] else "")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.submitters = [int(c) for c in args.queue_submitters.split(",") if c.strip()]
    import sqlalchemy
    import torch

    load_before = os.getloadavg()[0]
    code = code_state()

    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as tmp_name:
        tmp = Path(tmp_name)
        if args.model_dir:
            model_dir = args.model_dir.resolve()
        else:
            print("building a random Llama ...", flush=True)
            model_dir = build_model(tmp / "model")
        part1, command = run_server(model_dir, tmp, args)
        queue_rows, calls, positions, params = run_part2(model_dir, tmp, args)

    config = server_config(Path("MODEL_DIR"), args)
    config_yaml = yaml.safe_dump({k: v for k, v in config.items() if k != "models"}, sort_keys=False).strip()
    run_command = "genloom bench jobs " + shlex.join(argv) if argv else "genloom bench jobs"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}, torch {torch.__version__}, "
               f"SQLAlchemy {sqlalchemy.__version__}, SQLite {sqlite3.sqlite_version}; model "
               f"{model_dir.name if args.model_dir else 'random Llama'}, {params / 1e6:.2f}M parameters, float32; "
               f"1-minute load average {load_before:.2f} before the run; {code}")
    target_lines = targets(part1, queue_rows)
    section = "\n".join([
        SECTION, "", f"Command: `{run_command}`", "", f"Date: {date}", "", f"Machine: {machine}.", "",
        f"Part 1 serves the model with `genloom serve --config genloom.yaml`, one model `{MODEL}` and:", "",
        "```yaml", config_yaml, "```", "",
        f"Every premium request and free job is one chat prompt, greedy, exactly {args.max_tokens} tokens "
        "(`ignore_eos`). Idle: premium requests one at a time. Capacity: free jobs POSTed by 32 clients at once, "
        "completed jobs / (last `finished_at` - first POST). Overload: free jobs (tenant bulk) POSTed open-loop at "
        f"{args.overload:g}x that capacity for {args.window:g} s; {args.premium_clients} premium clients (tenant vip) "
        f"send back to back from {args.ramp:g} s into the window to its end; jobs count as completed in the window "
        "by their `finished_at`, and those left are dropped with the server. Part 2 runs in-process with no server: "
        "the real `JobService`, `InMemoryQueue` (default `SchedulerPolicy`) and `SqlJobStore` on a fresh SQLite "
        "file, and a worker thread that marks each job it takes started and finished at once; completed/s is until "
        "the last job is stored completed. Server, clients and the in-process runs share the machine.", "",
        *tables(part1, queue_rows, calls, positions), "", "Targets:", "", *target_lines,
    ])
    print("\n" + section, flush=True)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": run_command, "date": date, "machine": machine, "parameters": params,
            "server_command": command, "server_config": config, "part1": dataclasses.asdict(part1),
            "queue": [dataclasses.asdict(r) for r in queue_rows], "store_calls_ms": calls,
            "position_ms": positions, "targets": target_lines,
        }, indent=2, default=str))
        print(f"wrote {args.json}")
    return 1 if part1.not_run else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
