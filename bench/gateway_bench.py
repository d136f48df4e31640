"""Gateway overhead: genloom serve and LiteLLM's proxy in front of the same mock upstream, and the mock alone.

One run starts a fast mock OpenAI-compatible upstream (bench/_mock_upstream.py, its own process),
`genloom serve` with one remote model pointing at it (auth, rate limiter and queue on), and
`litellm --config` with one model pointing at it, then sends the same chat requests, plain and
streamed, at concurrency 1, 16 and 64 to each of the three in turn. Added latency is a gateway's
latency minus the mock's own at the same concurrency. Run it as `genloom bench gateway --help` or
`python bench/gateway_bench.py --help`.
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
import shutil
import signal
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
from _fast_client import Connection, Outcome, request_bytes  # noqa: E402
from _load import percentile  # noqa: E402
from _mock_upstream import ANSWER  # noqa: E402
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name, free_port, wait_ready  # noqa: E402

SECTION = "## Gateway overhead against LiteLLM"
MODEL = "mock"  # the name clients ask for, at both gateways
UPSTREAM_MODEL = "mock-upstream"  # the mock's own name for it
UPSTREAM_KEY = "sk-mock-upstream"
ADMIN_KEY = "gl-bench-gateway-admin-key-0123456789abcdef"
LITELLM_KEY = "sk-bench-litellm-master-key"
DIRECT, GENLOOM, LITELLM = "mock (direct)", "genloom", "litellm"
# temperature 1.0 keeps every plain request out of genloom's response cache (it serves only
# deterministic requests), so each one really goes to the upstream.
REQUEST = {"model": MODEL, "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 16,
           "temperature": 1.0}


@dataclass
class Target:
    name: str
    host: str
    port: int
    model: str
    headers: dict[str, str]
    pid: int  # the server process whose CPU time is counted
    alternate: str | None = None  # a second model name, asked for every other request


@dataclass
class Row:
    target: str
    stream: bool
    clients: int
    requests: int
    errors: int
    wall_s: float
    requests_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    ttft_p50_ms: float | None
    server_cpu_ms_per_request: float | None  # the gateway's process (the mock's, for the direct row)
    client_cpu_ms_per_request: float
    added_p50_ms: float | None = None
    added_p99_ms: float | None = None
    first_error: str | None = None
    timed_out: bool = False


@dataclass
class Server:
    name: str
    command: list[str]
    log: Path
    proc: subprocess.Popen | None = None
    not_run: str | None = None
    version: str | None = None
    config: dict = field(default_factory=dict)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench gateway", description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    p.add_argument("--requests", type=int, default=1000, help="measured requests per level and target")
    p.add_argument("--warmup", type=int, default=50, help="requests before each level, not counted (at least 2 x C)")
    p.add_argument("--level-timeout", type=float, default=120.0, help="seconds allowed for one level")
    p.add_argument("--max-concurrency", type=int, default=256, help="the genloom remote model's max_concurrency")
    p.add_argument("--litellm", help="the litellm executable (default: litellm on PATH, then beside this Python)")
    p.add_argument("--no-litellm", action="store_true", help="measure genloom against the mock only")
    p.add_argument("--profile", type=Path,
                   help="after the measured levels, record genloom and litellm with py-spy (GIL holder, 200 Hz) at the "
                        "highest concurrency into this folder as collapsed stacks; not counted in the table")
    p.add_argument("--write", type=Path, help="markdown file whose '## Gateway overhead against LiteLLM' section is replaced")
    p.add_argument("--json", type=Path, help="write raw results as JSON here")
    return p.parse_args(argv)


def genloom_config(mock_url: str, max_concurrency: int) -> dict:
    return {
        "builtin_models": False,
        "models": [{"name": MODEL, "kind": "remote", "base_url": f"{mock_url}/v1", "api_key": UPSTREAM_KEY,
                    "upstream_model": UPSTREAM_MODEL, "max_concurrency": max_concurrency}],
        "server": {"log_level": "warning", "drain_timeout_s": 5},
    }


def litellm_config(mock_url: str) -> dict:
    # No database: LiteLLM checks the master key and keeps no spend logs or per-key limits.
    return {
        "model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{UPSTREAM_MODEL}", "api_base": f"{mock_url}/v1", "api_key": UPSTREAM_KEY}}],
        "general_settings": {"master_key": LITELLM_KEY},
        "litellm_settings": {"set_verbose": False, "request_timeout": 600},
    }


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process and every process under it, from /proc (Linux); None elsewhere."""
    stats: dict[int, tuple[int, float]] = {}  # pid: (parent pid, CPU seconds)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        # After the command name: state, ppid, ..., utime and stime are the 12th and 13th fields.
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    if pid not in stats:
        return None
    tree: set[int] = set()
    grown = {pid}
    while grown:  # add children until no process is left whose parent is in the tree
        tree |= grown
        grown = {child for child, (parent, _) in stats.items() if parent in grown and child not in tree}
    return sum(stats[p][1] for p in tree)


async def run_level(target: Target, *, stream: bool, clients: int, total: int, warmup: int,
                    timeout_s: float, request: dict | None = None) -> Row:
    """`clients` workers, one keep-alive connection each, share `total` requests after a warm-up that opens them.
    Each sends `request` (REQUEST by default) with the target's model."""
    raws = []
    for model in [target.model] + ([target.alternate] if target.alternate else []):
        body = (REQUEST if request is None else request) | {"model": model}
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        raws.append(request_bytes(host=target.host, port=target.port, path="/v1/chat/completions",
                                  headers=target.headers, body=body))
    connections = [Connection(target.host, target.port) for _ in range(clients)]

    async def burst(n: int, into: list[Outcome]) -> None:
        issued = 0

        async def worker(connection: Connection) -> None:
            nonlocal issued
            while issued < n:
                issued += 1
                out = await connection.send(raws[issued % len(raws)], stream=stream)
                if out.error is None and out.text != ANSWER:
                    out.error = f"unexpected content {out.text!r:.100}"
                into.append(out)

        await asyncio.gather(*(worker(c) for c in connections))

    outcomes: list[Outcome] = []
    try:
        warm: list[Outcome] = []
        await burst(max(warmup, 2 * clients), warm)
        if failed := next((o.error for o in warm if o.error), None):
            raise RuntimeError(f"{target.name}: warm-up request failed: {failed}")
        cpu_before, client_before = cpu_seconds(target.pid), time.process_time()
        start = time.perf_counter()
        timed_out = False
        try:
            await asyncio.wait_for(burst(total, outcomes), timeout_s)
        except TimeoutError:
            timed_out = True
        wall = time.perf_counter() - start
        cpu_after, client_after = cpu_seconds(target.pid), time.process_time()
    finally:
        await asyncio.gather(*(c.close() for c in connections))

    done = [o for o in outcomes if o.error is None]
    ms = [o.latency_s * 1000 for o in done]
    ttft = [o.ttft_s * 1000 for o in done if o.ttft_s is not None]
    server_cpu = None if cpu_before is None or cpu_after is None or not outcomes else \
        (cpu_after - cpu_before) * 1000 / len(outcomes)
    return Row(
        target=target.name, stream=stream, clients=clients, requests=len(outcomes), errors=total - len(done),
        wall_s=wall, requests_per_s=len(done) / wall if wall > 0 else 0.0, p50_ms=percentile(ms, 50),
        p99_ms=percentile(ms, 99), ttft_p50_ms=percentile(ttft, 50) if stream else None,
        server_cpu_ms_per_request=server_cpu,
        client_cpu_ms_per_request=(client_after - client_before) * 1000 / max(1, len(outcomes)),
        first_error=next((o.error for o in outcomes if o.error), None), timed_out=timed_out,
    )


def add_overhead(rows: list[Row]) -> None:
    """Added latency: a gateway's p50/p99 minus the mock's own at the same mode and concurrency."""
    direct = {(r.stream, r.clients): r for r in rows if r.target == DIRECT}
    for r in rows:
        base = direct.get((r.stream, r.clients))
        if r.target == DIRECT or base is None:
            continue
        if r.p50_ms is not None and base.p50_ms is not None:
            r.added_p50_ms = r.p50_ms - base.p50_ms
        if r.p99_ms is not None and base.p99_ms is not None:
            r.added_p99_ms = r.p99_ms - base.p99_ms


async def measure(endpoints: list[Target], args: argparse.Namespace) -> tuple[list[Row], dict[str, str]]:
    """Every level, each target in turn before the next level, so drift hits them alike. A target whose
    warm-up fails is dropped from the later levels, and the reason is returned by its name."""
    rows, failed = [], {}
    for stream in (False, True):
        for clients in args.levels:
            for target in endpoints:
                if target.name in failed:
                    continue
                print(f"{'stream' if stream else 'plain'} C={clients}: {target.name} ...", flush=True)
                try:
                    row = await run_level(target, stream=stream, clients=clients, total=args.requests,
                                          warmup=args.warmup, timeout_s=args.level_timeout)
                except RuntimeError as e:
                    print(f"  {e}", file=sys.stderr, flush=True)
                    failed[target.name] = str(e)
                    continue
                print(f"  {row.requests_per_s:,.0f} req/s, p50 {fmt(row.p50_ms, 2)} ms, p99 {fmt(row.p99_ms, 2)} ms, "
                      f"errors {row.errors}" + (f" ({row.first_error})" if row.first_error else ""), flush=True)
                rows.append(row)
    add_overhead(rows)
    return rows, failed


def run_async(coroutine):
    """On uvloop when it is installed, as the mock and both gateways' uvicorn are."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def start(server: Server, env: dict[str, str]) -> None:
    print(f"{server.name}: {shlex.join(server.command)}", flush=True)
    with open(server.log, "wb") as log:
        server.proc = subprocess.Popen(server.command, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop(server: Server) -> None:
    proc = server.proc
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ready(server: Server, url: str) -> bool:
    """Wait for `url` to answer 200; on failure say why in `server.not_run` with the log's tail."""
    try:
        assert server.proc is not None
        wait_ready(server.proc, url, server.log, timeout_s=120)
        return True
    except Exception as e:
        tail = server.log.read_text(errors="replace").strip().splitlines()[-10:]
        print(f"{server.name}: not run: {e}; its log ends:", *tail, sep="\n  ", file=sys.stderr, flush=True)
        server.not_run = f"{type(e).__name__}: {e}"
        return False


def genloom_tenant_key(base_url: str) -> str:
    """A premium tenant with limits far above the load, so the rate limiter keeps buckets but never refuses."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    limits = {"requests_per_minute": 10_000_000, "tokens_per_minute": 1_000_000_000}
    with httpx.Client(base_url=base_url, headers=admin, trust_env=False, timeout=10) as c:
        tenant = c.post("/v1/admin/tenants", json={"name": "bench", "tier": "premium", "limits": limits})
        tenant.raise_for_status()
        key = c.post(f"/v1/admin/tenants/{tenant.json()['id']}/keys", json={"name": "bench"})
        key.raise_for_status()
        return key.json()["key"]


def find_litellm(given: str | None) -> str | None:
    if given:
        return given
    beside = Path(sys.executable).with_name("litellm")
    return shutil.which("litellm") or (str(beside) if beside.exists() else None)


def package_version(python: Path, package: str) -> str | None:
    try:
        out = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version('{package}'))"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return out.stdout.strip() or None


def profile(servers: list[tuple[Server, Target]], args: argparse.Namespace) -> list[str]:
    """py-spy record on each gateway while it serves the highest concurrency, plain then streamed."""
    folders = [Path(sys.executable).parent, *([Path(args.litellm_bin).parent] if args.litellm_bin else [])]
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=os.pathsep.join(map(str, folders)))
    if py_spy is None:
        print("not profiled: py-spy not found (pip install py-spy)", file=sys.stderr, flush=True)
        return ["py-spy not found: `pip install py-spy`"]
    args.profile.mkdir(parents=True, exist_ok=True)
    notes = []
    clients = max(args.levels)
    for server, target in servers:
        for stream in (False, True):
            stem = args.profile / f"{server.name}-{'stream' if stream else 'plain'}-c{clients}"
            # --gil samples the thread holding the GIL, which is what bounds a Python server's throughput;
            # --nonblocking leaves the gateway running between samples, so the load it sees is unchanged.
            recorder = subprocess.Popen([py_spy, "record", "--pid", str(target.pid), "--subprocesses", "--threads",
                                         "--gil", "--nonblocking", "--rate", "200", "--format", "raw",
                                         "--output", f"{stem}.txt", "--duration", "600"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            row = run_async(run_level(target, stream=stream, clients=clients, total=args.requests,
                                      warmup=args.warmup, timeout_s=args.level_timeout))
            recorder.send_signal(signal.SIGINT)  # py-spy writes its output when interrupted
            try:
                recorder.wait(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
            notes.append(f"{stem}.txt: {row.requests_per_s:,.0f} req/s while sampled")
            print(notes[-1], flush=True)
    return notes


def run(tmp: Path, args: argparse.Namespace) -> tuple[list[Row], list[Server], list[str]]:
    mock_port, genloom_port, litellm_port = free_port(), free_port(), free_port()
    mock_url = f"http://127.0.0.1:{mock_port}"
    mock = Server("mock", [sys.executable, str(Path(__file__).with_name("_mock_upstream.py")), "--port", str(mock_port)],
                  tmp / "mock.log")
    gconf = genloom_config(mock_url, args.max_concurrency)
    (tmp / "genloom.yaml").write_text(yaml.safe_dump(gconf, sort_keys=False))
    genloom = Server(GENLOOM, [sys.executable, "-m", "genloom.cli", "serve", "--host", "127.0.0.1", "--port",
                               str(genloom_port), "--data-dir", str(tmp / "data"), "--config", str(tmp / "genloom.yaml")],
                     tmp / "genloom.log", config=gconf)
    lconf = litellm_config(mock_url)
    (tmp / "litellm.yaml").write_text(yaml.safe_dump(lconf, sort_keys=False))
    litellm = Server(LITELLM, [args.litellm_bin or "litellm", "--config", str(tmp / "litellm.yaml"), "--host",
                               "127.0.0.1", "--port", str(litellm_port), "--num_workers", "1"],
                     tmp / "litellm.log", config=lconf)
    if args.no_litellm:
        litellm.not_run = "skipped with --no-litellm"
    elif args.litellm_bin is None:
        litellm.not_run = "litellm is not installed: pip install 'litellm[proxy]' (see bench/README.md)"
    else:
        litellm.version = package_version(Path(args.litellm_bin).with_name("python"), "litellm")

    servers = [mock, genloom, litellm]
    notes: list[str] = []
    try:
        start(mock, dict(os.environ))
        start(genloom, os.environ | {"GENLOOM_ADMIN_KEY": ADMIN_KEY})
        if litellm.not_run is None:
            # The local model cost map keeps LiteLLM from fetching one over the network at start.
            start(litellm, os.environ | {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"})
        if not ready(mock, f"{mock_url}/health"):
            raise RuntimeError(f"the mock upstream did not start: {mock.not_run}")
        endpoints = [Target(DIRECT, "127.0.0.1", mock_port, UPSTREAM_MODEL, {"Authorization": f"Bearer {UPSTREAM_KEY}"},
                            mock.proc.pid)]
        if ready(genloom, f"http://127.0.0.1:{genloom_port}/readyz"):
            key = genloom_tenant_key(f"http://127.0.0.1:{genloom_port}")
            endpoints.append(Target(GENLOOM, "127.0.0.1", genloom_port, MODEL,
                                    {"Authorization": f"Bearer {key}"}, genloom.proc.pid))
        if litellm.not_run is None and ready(litellm, f"http://127.0.0.1:{litellm_port}/health/liveliness"):
            endpoints.append(Target(LITELLM, "127.0.0.1", litellm_port, MODEL,
                                    {"Authorization": f"Bearer {LITELLM_KEY}"}, litellm.proc.pid))
        rows, failed = run_async(measure(endpoints, args))
        for server in servers:
            server.not_run = server.not_run or failed.get(server.name if server is not mock else DIRECT)
        if args.profile:
            gateways = [(s, t) for s in (genloom, litellm) for t in endpoints if t.name == s.name and not s.not_run]
            notes = profile(gateways, args)
    finally:
        for server in reversed(servers):
            stop(server)
    return rows, servers, notes


def fmt(v: float | None, digits: int = 1) -> str:
    return "—" if v is None else f"{v:,.{digits}f}"


def table(rows: list[Row]) -> list[str]:
    out = ["| Mode | Clients | Target | Requests | Errors | Requests/s | p50 ms | p99 ms | Added p50 ms | Added p99 ms "
           "| TTFT p50 ms | Server CPU ms/request |",
           "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {'stream' if r.stream else 'plain'} | {r.clients} | {r.target} | {r.requests} | {r.errors} | "
                   f"{r.requests_per_s:,.0f} | {fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} | {fmt(r.added_p50_ms, 2)} | "
                   f"{fmt(r.added_p99_ms, 2)} | {fmt(r.ttft_p50_ms, 2)} | {fmt(r.server_cpu_ms_per_request, 2)} |")
    return out


def targets(rows: list[Row], servers: list[Server]) -> list[str]:
    verdict = {True: "met", False: "missed"}
    lines = [f"- {s.name} was not run: {s.not_run}" for s in servers if s.not_run]
    by = {(r.target, r.stream, r.clients): r for r in rows}
    for stream in (False, True):
        mode = "streamed" if stream else "plain"
        for clients in sorted({r.clients for r in rows}):
            g, peer = by.get((GENLOOM, stream, clients)), by.get((LITELLM, stream, clients))
            if g is None or peer is None:
                continue
            scored = clients >= 16  # the issue sets the targets at concurrency 16 and 64
            if g.added_p50_ms is not None and peer.added_p50_ms is not None:
                ok = g.added_p50_ms <= peer.added_p50_ms / 3
                ratio = g.added_p50_ms / peer.added_p50_ms if peer.added_p50_ms > 0 else float("nan")
                lines.append(f"- {mode}, C={clients}: added p50 {g.added_p50_ms:,.2f} ms vs LiteLLM "
                             f"{peer.added_p50_ms:,.2f} ms = {ratio:.2f}x LiteLLM's (target <= 0.33x: "
                             + (verdict[ok] if scored else f"{verdict[ok]}, for reference: C=1 is not a target") + ")")
            if scored and peer.requests_per_s > 0:
                ratio = g.requests_per_s / peer.requests_per_s
                lines.append(f"- {mode}, C={clients}: {g.requests_per_s:,.0f} vs {peer.requests_per_s:,.0f} requests/s "
                             f"= {ratio:.2f}x LiteLLM's (target >= 3x: {verdict[ratio >= 3]})")
    errors = [r for r in rows if r.errors]
    if errors:
        lines.append("- errors: " + "; ".join(f"{r.target} {'stream' if r.stream else 'plain'} C={r.clients}: "
                                             f"{r.errors} ({r.first_error})" for r in errors))
    return lines


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.levels = [int(c) for c in args.clients.split(",") if c.strip()]
    args.litellm_bin = None if args.no_litellm else find_litellm(args.litellm)
    load_before = os.getloadavg()[0]
    code = code_state()
    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as tmp_name:
        rows, servers, notes = run(Path(tmp_name), args)
    genloom, litellm = servers[1], servers[2]

    import uvicorn

    try:
        import uvloop
        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    run_command = "genloom bench gateway " + shlex.join(argv) if argv else "genloom bench gateway"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}, "
               f"uvicorn {uvicorn.__version__}, {loop}; LiteLLM {litellm.version or 'not installed'}; 1-minute load "
               f"average {load_before:.2f} before the run; {code}")
    shown = "http://127.0.0.1:MOCK_PORT"
    gconf, lconf = genloom_config(shown, args.max_concurrency), litellm_config(shown)
    target_lines = targets(rows, servers)
    section = "\n".join([
        SECTION, "", f"Command: `{run_command}`", "", f"Date: {date}", "", f"Machine: {machine}.", "",
        "Upstream: `bench/_mock_upstream.py`, a raw asyncio HTTP/1.1 server in its own process that answers "
        "`POST /v1/chat/completions` at once with a fixed 8-token reply: JSON, or server-sent events (a role chunk, 8 "
        "content chunks, a finish chunk, a usage chunk, `[DONE]`). The direct rows measure it with no gateway.", "",
        "Genloom: `genloom serve --config genloom.yaml` with `GENLOOM_ADMIN_KEY` set, auth enabled (the default), and:",
        "", "```yaml", yaml.safe_dump(gconf, sort_keys=False).strip(), "```", "",
        "The client uses the key of a premium tenant made through the admin API with limits of 10,000,000 requests "
        "and 1,000,000,000 tokens per minute, so every request is looked up by key, charged to the rate limiter's "
        "buckets, queued and run by the remote worker, and never refused. Plain requests send `temperature: 1.0`, "
        "which keeps them out of the response cache (it serves only deterministic requests): each one reaches the "
        "upstream.", "",
        "LiteLLM: `litellm --config litellm.yaml --num_workers 1` (one uvicorn process on uvloop and httptools, as "
        "genloom is) with "
        "`LITELLM_LOCAL_MODEL_COST_MAP=True` and `LITELLM_LOG=ERROR`, no database, and a master key that every "
        "request carries (LiteLLM's rate limits and virtual keys need its database, so it ran without them):", "",
        "```yaml", yaml.safe_dump(lconf, sort_keys=False).strip(), "```", "",
        "Load: `bench/_fast_client.py`, a lean HTTP/1.1 client on one event loop (with httpx the client measured "
        "itself: about 0.6 ms of CPU a request, and a p99 of about a second against the bare mock at C=64), C "
        f"workers with a keep-alive connection each; per level and target {args.warmup} (at least "
        f"2 x C) warm-up requests, then {args.requests} measured ones, each `max_tokens: 16, temperature: 1.0`; "
        "every reply is checked to be the mock's text. Each level runs the three targets in turn. Latency is "
        "request to last byte (`[DONE]` when streamed); TTFT to the first content chunk. Added = gateway minus "
        "direct at the same mode and C. Server CPU is the user + system time of the gateway's process (for the "
        "direct rows the mock's) per request. Mock, gateways and client share the machine's CPUs.", "",
        *table(rows), "", "Targets:", "", *target_lines,
    ])
    print("\n" + section, flush=True)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    if args.json:
        args.json.write_text(json.dumps({
            "command": run_command, "date": date, "machine": machine, "rows": [dataclasses.asdict(r) for r in rows],
            "servers": [{"name": s.name, "command": s.command, "not_run": s.not_run, "version": s.version,
                         "config": s.config} for s in servers],
            "targets": target_lines,
            "profile": notes,
        }, indent=2, default=str))
        print(f"wrote {args.json}")
    return 1 if genloom.not_run else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
