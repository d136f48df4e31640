"""What a canary rollout costs the hot path: one genloom server, one remote model on a mock
upstream with two versions (v2 the same upstream), and a canary between them at 50%. The same
chat requests, plain and streamed, go in turn (a) to `mock-canary@v1` and `mock-canary@v2`
alternately, named explicitly, which no rollout touches, and (b) to `mock-canary`, which the
canary splits, counts and judges: the same two workers serve both, so the difference is the
rollout's own cost. Added latency is a target's p50 minus the mock's own. Target: with the
canary, added p50 within 10% of without. Run it as `genloom bench rollout --help`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from gateway_bench import (  # noqa: E402
    ADMIN_KEY, DIRECT, UPSTREAM_KEY, UPSTREAM_MODEL, Row, Server, Target, add_overhead, fmt, genloom_tenant_key,
    ready, run_async, run_level, start, stop,
)
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name, free_port  # noqa: E402

SECTION = "## A canary rollout on the hot path"
CANARY_MODEL = "mock-canary"
WITHOUT, WITH = "genloom, v1/v2 by name", "genloom, canary 50%"


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench rollout", description=__doc__.split("\n")[0])
    p.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    p.add_argument("--requests", type=int, default=1000, help="measured requests per level and target")
    p.add_argument("--warmup", type=int, default=100, help="requests before each level, not counted")
    p.add_argument("--rounds", type=int, default=3, help="each level is measured this many times per target, alternating")
    p.add_argument("--level-timeout", type=float, default=120.0)
    p.add_argument("--write", type=Path, help="markdown file whose '## A canary rollout on the hot path' section is replaced")
    p.add_argument("--json", type=Path, help="write raw results as JSON here")
    return p.parse_args(argv)


def genloom_config(mock_url: str) -> dict:
    remote = {"kind": "remote", "base_url": f"{mock_url}/v1", "api_key": UPSTREAM_KEY, "upstream_model": UPSTREAM_MODEL,
              "max_concurrency": 256}
    return {
        "builtin_models": False,
        "models": [{"name": CANARY_MODEL, **remote}],
        "upstream_allow_hosts": ["127.0.0.1"],
        "server": {"log_level": "warning", "drain_timeout_s": 5},
    }


def start_canary(base_url: str, mock_url: str) -> dict:
    """Register v2 of the canary model (the same upstream) and send it half the traffic; the gates
    judge every request but never decide (min_requests above the run), so the split holds."""
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with httpx.Client(base_url=base_url, headers=admin, trust_env=False, timeout=30) as c:
        c.post("/v1/admin/models", json={"name": CANARY_MODEL, "kind": "remote", "base_url": f"{mock_url}/v1",
                                         "api_key": UPSTREAM_KEY, "upstream_model": UPSTREAM_MODEL,
                                         "max_concurrency": 256}).raise_for_status()
        deadline = time.monotonic() + 60
        while not c.get(f"/v1/admin/models/{CANARY_MODEL}/versions/v2").json()["loaded_here"]:
            if time.monotonic() > deadline:
                raise RuntimeError("v2 did not load")
            time.sleep(0.1)
        plan = {"strategy": "canary", "candidate": "v2", "percent": 50, "step_after_requests": 10_000_000,
                "gates": {"min_requests": 100_000}}
        c.post(f"/v1/admin/models/{CANARY_MODEL}/rollouts", json=plan).raise_for_status()
        return plan


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    levels = [int(c) for c in args.clients.split(",") if c.strip()]
    load_before, code = os.getloadavg()[0], code_state()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="genloom-bench-") as tmp_name:
        tmp = Path(tmp_name)
        mock_port, port = free_port(), free_port()
        mock_url = f"http://127.0.0.1:{mock_port}"
        mock = Server("mock", [sys.executable, str(Path(__file__).with_name("_mock_upstream.py")), "--port", str(mock_port)],
                      tmp / "mock.log")
        (tmp / "genloom.yaml").write_text(yaml.safe_dump(genloom_config(mock_url), sort_keys=False))
        genloom = Server("genloom", [sys.executable, "-m", "genloom.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                                     "--data-dir", str(tmp / "data"), "--config", str(tmp / "genloom.yaml")], tmp / "genloom.log")
        try:
            start(mock, dict(os.environ))
            start(genloom, os.environ | {"GENLOOM_ADMIN_KEY": ADMIN_KEY})
            if not ready(mock, f"{mock_url}/health") or not ready(genloom, f"http://127.0.0.1:{port}/readyz"):
                raise RuntimeError(f"not started: {mock.not_run or genloom.not_run}")
            base = f"http://127.0.0.1:{port}"
            plan = start_canary(base, mock_url)
            auth = {"Authorization": f"Bearer {genloom_tenant_key(base)}"}
            assert mock.proc is not None and genloom.proc is not None
            targets = [
                Target(DIRECT, "127.0.0.1", mock_port, UPSTREAM_MODEL, {"Authorization": f"Bearer {UPSTREAM_KEY}"}, mock.proc.pid),
                Target(WITHOUT, "127.0.0.1", port, f"{CANARY_MODEL}@v1", auth, genloom.proc.pid, alternate=f"{CANARY_MODEL}@v2"),
                Target(WITH, "127.0.0.1", port, CANARY_MODEL, auth, genloom.proc.pid),
            ]
            for stream in (False, True):
                for clients in levels:
                    for _ in range(args.rounds):
                        for target in targets:
                            row = run_async(run_level(target, stream=stream, clients=clients, total=args.requests,
                                                      warmup=args.warmup, timeout_s=args.level_timeout))
                            print(f"{'stream' if stream else 'plain'} C={clients} {target.name}: p50 {fmt(row.p50_ms, 2)} ms, "
                                  f"{row.requests_per_s:,.0f} req/s, errors {row.errors}", flush=True)
                            rows.append(row)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10) as c:
                rollout = c.get(f"/v1/admin/models/{CANARY_MODEL}/rollouts/current").json()
        finally:
            stop(genloom)
            stop(mock)
    add_overhead(rows)
    summary, lines = summarize(rows, levels)
    run_command = "genloom bench rollout " + shlex.join(argv) if argv else "genloom bench rollout"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = (f"{os.cpu_count()} CPUs ({cpu_name()}), Python {platform.python_version()}; 1-minute load average "
               f"{load_before:.2f} before the run; {code}")
    split = rollout["figures"]
    section = "\n".join([
        SECTION, "", f"Command: `{run_command}`", "", f"Date: {date}", "", f"Machine: {machine}.", "",
        f"One `genloom serve` (auth on, a premium tenant's key, the rate limiter charged) with one remote model, "
        f"`{CANARY_MODEL}`, on a mock upstream (`bench/_mock_upstream.py`), a second version registered through the "
        f"admin API on the same upstream, and a canary rollout running: `{json.dumps(plan)}`. Without: requests name "
        f"`{CANARY_MODEL}@v1` and `{CANARY_MODEL}@v2` alternately (explicit versions, which no rollout splits). With: "
        f"requests name `{CANARY_MODEL}`: each is split by hash, its outcome counted in the rollout's window and judged "
        "by the gates (which never decide here, so the split holds for the whole run). The same two remote workers "
        "serve both, so the difference is the rollout's own cost. Per level, the mock, then each target in turn, "
        f"{args.rounds} rounds of {args.requests} measured requests after {args.warmup} warm-up ones; the p50 of a "
        "level is the median of its rounds' p50s. Added = the model's p50 minus the mock's own.", "",
        f"The canary's split over the run: candidate {split['candidate']['requests']:,} requests, stable "
        f"{split['stable']['requests']:,} (in the last {rollout['plan']['gates']['window_s']:.0f} s window).", "",
        "| Mode | Clients | Mock p50 ms | Added p50 ms, v1/v2 by name (rounds' range) | Added p50 ms, canary (rounds' range) | Canary / by name | Server CPU ms/request, by name | Server CPU ms/request, canary | Requests/s, by name | Requests/s, canary |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *lines, "", f"Target: added p50 with the canary within 10% of without: {summary}.", "",
        "Server CPU is the genloom process's user + system time per request over each round (median of the rounds): "
        "the rollout's own work (split, count, judge) shows there directly, while p50s at C >= 16 are queueing "
        "times whose range across rounds is wider than the target.",
    ])
    print("\n" + section, flush=True)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    if args.json:
        args.json.write_text(json.dumps({"command": run_command, "rows": [r.__dict__ for r in rows]}, indent=2, default=str))
    return 0


def summarize(rows: list[Row], levels: list[int]) -> tuple[str, list[str]]:
    def median(values: list[float]) -> float:
        values = sorted(values)
        return values[len(values) // 2]

    lines, verdicts = [], []
    for stream in (False, True):
        for clients in levels:
            def pick(name: str, field: str) -> float:
                return median([getattr(r, field) for r in rows if r.target == name and r.stream == stream and r.clients == clients])
            def spread(name: str) -> str:
                values = [r.added_p50_ms for r in rows if r.target == name and r.stream == stream and r.clients == clients]
                return f"{min(values):.2f}–{max(values):.2f}"

            direct, without, with_ = pick(DIRECT, "p50_ms"), pick(WITHOUT, "added_p50_ms"), pick(WITH, "added_p50_ms")
            ratio = with_ / without if without > 0 else float("nan")
            met = with_ <= without * 1.10
            cpu_without, cpu_with = pick(WITHOUT, "server_cpu_ms_per_request"), pick(WITH, "server_cpu_ms_per_request")
            verdicts.append(f"{'stream' if stream else 'plain'} C={clients} {ratio:.2f}x ({'met' if met else 'missed'})")
            lines.append(f"| {'stream' if stream else 'plain'} | {clients} | {direct:.2f} | {without:.2f} ({spread(WITHOUT)}) | "
                         f"{with_:.2f} ({spread(WITH)}) | {ratio:.2f}x | {cpu_without:.2f} | {cpu_with:.2f} | "
                         f"{pick(WITHOUT, 'requests_per_s'):,.0f} | {pick(WITH, 'requests_per_s'):,.0f} |")
    return "; ".join(verdicts), lines


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
