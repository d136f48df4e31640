"""Soak: steady mixed traffic against a real `genloom serve` (the built-in models) for N minutes,
sampling the server's RSS, open file descriptors, threads, database size and (with
GENLOOM_REDIS_URL set) Redis memory every `--sample-s` seconds. Reports the series, every error,
and each resource's growth after warm-up: the slope of a least-squares line through the samples
after the warm-up, and the last sample against the first after it. Goal: RSS growth under 5%
after warm-up and no errors. Run it as `genloom bench soak --help`.

The traffic, from `--clients` threads that each send one request after another with a pause of
`--pause-s`: plain and streamed chat (genloom-text-mini, 16 tokens), async jobs (submitted and
later read back until done), images (genloom-image-mini, 64x64, 4 steps) and embeddings
(all-minilm-l6-v2), in turn. Every request must succeed; anything else is counted and shown."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from jobs_bench import code_state  # noqa: E402
from text_bench import cpu_name, free_port  # noqa: E402

SECTION = "## Soak: resources under steady mixed traffic"
ADMIN_KEY = "gl-soak-bench-admin-key-0123456789abcdef"
KINDS = ("chat", "stream", "job", "image", "embedding")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=15.0, help="how long the traffic runs")
    p.add_argument("--warmup-minutes", type=float, default=None, help="left out of the growth figures [default: a fifth of --minutes, at most 5]")
    p.add_argument("--sample-s", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--clients", type=int, default=3, help="threads sending requests")
    p.add_argument("--pause-s", type=float, default=0.2, help="each client's pause between requests")
    p.add_argument("--out", type=Path, default=None, help="write the samples and summary as JSON here")
    p.add_argument("--docs", type=Path, default=None, help="write the result as a section of this markdown file")
    return p.parse_args(argv)


@dataclass
class Traffic:
    base: str
    pause_s: float
    sent: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, first: int) -> None:
        http = httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=120)
        i = first
        while not self.stop.is_set():
            kind = KINDS[i % len(KINDS)]
            try:
                self._one(http, kind, i)
                with self.lock:
                    self.sent[kind] += 1
            except Exception as e:  # every failure is a finding: keep it
                with self.lock:
                    self.errors.append(f"{kind}: {type(e).__name__}: {str(e)[:400]}")
            i += 1
            self.stop.wait(self.pause_s)
        http.close()

    def _one(self, http: httpx.Client, kind: str, i: int) -> None:
        chat = {"model": "genloom-text-mini", "messages": [{"role": "user", "content": f"def f{i}(x):"}], "max_tokens": 16}
        if kind == "chat":
            _ok(http.post("/v1/chat/completions", json=chat))
        elif kind == "stream":
            with http.stream("POST", "/v1/chat/completions", json=chat | {"stream": True}) as answer:
                _ok(answer)
                body = "".join(answer.iter_text())
                check_stream(body)
        elif kind == "job":
            answer = _ok(http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": chat}))
            with self.lock:
                self.jobs.append(answer.json()["id"])
        elif kind == "image":
            _ok(http.post("/v1/images/generations", json={
                "model": "genloom-image-mini", "prompt": f"a red circle {i}", "size": "64x64", "steps": 4,
                "response_format": "b64_json",
            }))
        else:
            _ok(http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": [f"text {i}", "another"]}))


def check_stream(body: str) -> None:
    """Every event of a chat stream is a chunk, and [DONE] ends it; an error event (a top-level
    "error" object) is raised whole. (Looking for the text "error" in the body is not enough:
    the model may write the word, and a delta of "error" is `"content":"error"`.)"""
    events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
    if not events or events[-1] != "[DONE]":
        raise RuntimeError(f"stream cut before [DONE]: ...{body[-160:]}")
    for event in events[:-1]:
        payload = json.loads(event)
        if "error" in payload:
            raise RuntimeError(f"stream ended with an error event: {event[:300]}")
        if payload.get("object") != "chat.completion.chunk":
            raise RuntimeError(f"not a chat chunk: {event[:300]}")


def _ok(answer: httpx.Response) -> httpx.Response:
    if answer.status_code >= 300:
        answer.read()
        raise RuntimeError(f"HTTP {answer.status_code}: {answer.text[:200]}")
    return answer


def sample(pid: int, data_dir: Path, redis_url: str | None) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    database = sum(p.stat().st_size for p in data_dir.glob("genloom.db*"))
    row = {
        "rss_mib": int(fields["VmRSS"].split()[0]) / 1024,
        # Anonymous memory is where a leak shows; file-backed pages are mapped weights and code.
        "rss_anon_mib": int(fields["RssAnon"].split()[0]) / 1024,
        "rss_file_mib": int(fields["RssFile"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
        "db_mib": database / 2**20,
    }
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        row["redis_mib"] = int(client.info("memory")["used_memory"]) / 2**20
        client.close()
    return row


def growth(samples: list[dict], key: str, after_s: float) -> dict:
    points = [(s["t_s"], s[key]) for s in samples if s["t_s"] >= after_s and key in s]
    if len(points) < 2:
        return {"first": None, "last": None, "change_pct": None, "slope_per_hour": None, "halves_per_hour": [None, None]}
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    slope = sum((t - mean_t) * (v - mean_v) for t, v in points) / var if var else 0.0
    first, last = points[0][1], points[-1][1]
    half = points[len(points) // 2][0]
    return {
        "first": round(first, 2), "last": round(last, 2),
        "change_pct": round(100 * (last - first) / first, 2) if first else None,
        "slope_per_hour": round(slope * 3600, 3),
        # Slopes of the first and the second half after warm-up: a cache filling up slows down, a leak does not.
        "halves_per_hour": [_slope([p for p in points if p[0] <= half]), _slope([p for p in points if p[0] >= half])],
    }


def _slope(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 2:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    return round(3600 * sum((t - mean_t) * (v - mean_v) for t, v in points) / var, 3) if var else 0.0


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    args.argv = list(argv)
    args.code = code_state()  # what is measured is what was there at the start
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(5.0, args.minutes / 5))
    redis_url = os.environ.get("GENLOOM_REDIS_URL")
    with tempfile.TemporaryDirectory(prefix="genloom-soak-") as tmp:
        data_dir = Path(tmp) / "data"
        port = free_port()
        log_path = Path(tmp) / "server.log"
        env = {**os.environ, "GENLOOM_ADMIN_KEY": ADMIN_KEY, "GENLOOM_DATA_DIR": str(data_dir)}
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "genloom.cli", "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=tmp,
            )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None:
                    print(log_path.read_text(), file=sys.stderr)
                    return 1
                try:
                    if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    print("the server was not ready in 5 minutes", file=sys.stderr)
                    return 1
                time.sleep(0.5)
            traffic = Traffic(base=base, pause_s=args.pause_s)
            clients = [threading.Thread(target=traffic.run, args=(i,), daemon=True) for i in range(args.clients)]
            started = time.monotonic()
            for c in clients:
                c.start()
            samples = []
            end = started + args.minutes * 60
            while True:
                now = time.monotonic()
                row = {"t_s": round(now - started, 1), **sample(server.pid, data_dir, redis_url)}
                row["requests"] = sum(traffic.sent.values())
                samples.append(row)
                print(json.dumps(row), flush=True)
                if now >= end:
                    break
                time.sleep(min(args.sample_s, max(0.0, end - now)))
            traffic.stop.set()
            for c in clients:
                c.join(120)
            # Every job submitted must end completed.
            http = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)
            deadline = time.monotonic() + 300
            unfinished = list(traffic.jobs)
            while unfinished and time.monotonic() < deadline:
                states = {j: http.get(f"/v1/jobs/{j}").json()["status"] for j in unfinished}
                for job_id, state in states.items():
                    if state in ("failed", "cancelled"):
                        traffic.errors.append(f"job {job_id} ended {state}")
                unfinished = [j for j, s in states.items() if s not in ("completed", "failed", "cancelled")]
                time.sleep(1)
            traffic.errors += [f"job {j} unfinished after 5 minutes" for j in unfinished]
            elapsed = time.monotonic() - started
        finally:
            server.terminate()
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
    keys = ["rss_mib", "rss_anon_mib", "rss_file_mib", "fds", "threads", "db_mib"] + (["redis_mib"] if redis_url else [])
    summary = {
        "minutes": args.minutes, "warmup_s": warmup_s, "clients": args.clients, "requests": dict(traffic.sent),
        "requests_per_s": round(sum(traffic.sent.values()) / elapsed, 2), "errors": len(traffic.errors),
        "error_examples": traffic.errors[:10], "growth_after_warmup": {k: growth(samples, k, warmup_s) for k in keys},
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    if args.docs:
        write_section(args.docs, SECTION, render(args, summary, samples, keys))
    rss = summary["growth_after_warmup"]["rss_mib"]["change_pct"]
    return 0 if not traffic.errors and rss is not None and rss < 5 else 1


def render(args: argparse.Namespace, summary: dict, samples: list[dict], keys: list[str]) -> str:
    command = " ".join(["genloom bench soak", *(shlex.quote(a) for a in args.argv)])
    lines = [
        SECTION, "",
        f"`{command}`, {datetime.date.today().isoformat()}, {args.code}, on {cpu_name()} "
        f"({os.cpu_count()} cores), Python {platform.python_version()}; one `genloom serve` with the built-in models"
        + (", queue on Redis" if "redis_mib" in keys else " (embedded: SQLite, in-process queue)") + ".",
        "",
        f"{args.clients} clients, {summary['requests_per_s']} requests/s for {args.minutes:g} minutes: "
        + ", ".join(f"{n} {k}" for k, n in sorted(summary["requests"].items()))
        + f"; **{summary['errors']} errors**" + (f" (e.g. {summary['error_examples'][0]})" if summary["errors"] else "") + ".",
        "",
        f"Growth after the {summary['warmup_s'] / 60:g}-minute warm-up (first and last sample after it; slope of a "
        "least-squares line through every sample after it):",
        "",
        "| resource | after warm-up | at the end | change | slope per hour | slope per hour, 1st / 2nd half |",
        "|---|---|---|---|---|---|",
    ]
    for key in keys:
        g = summary["growth_after_warmup"][key]
        halves = " / ".join(str(h) for h in g["halves_per_hour"])
        lines.append(f"| {key} | {g['first']} | {g['last']} | {g['change_pct']}% | {g['slope_per_hour']} | {halves} |")
    lines += ["", "Samples (every " + f"{args.sample_s:g} s; a tenth of them shown):", "", "| t (s) | " + " | ".join(keys) + " | requests |",
              "|---|" + "---|" * (len(keys) + 1)]
    step = max(1, len(samples) // 10)
    for s in samples[::step] + ([samples[-1]] if (len(samples) - 1) % step else []):
        lines.append(f"| {s['t_s']} | " + " | ".join(f"{s[k]:.1f}" for k in keys) + f" | {s['requests']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
