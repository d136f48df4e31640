"""How fast the web console's pages are usable with a busy store: `genloom serve` (the built-in
models) is given `--jobs` async jobs (10,000 by default, each a one-token chat, submitted through
the API and run to completion) and some chat traffic for the usage charts; then Debian's Chromium,
driven by Playwright, opens every page in turn, several rounds, and the time from asking for the
page to its main content on screen (the page's own data fetched and drawn) is taken.

    genloom bench console --docs docs/benchmarks.md
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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import publish  # noqa: E402
from jobs_bench import code_state  # noqa: E402
from _serve import serving  # noqa: E402
from text_bench import cpu_name  # noqa: E402

SECTION = "## Console page load with a busy store"
GOAL_S = 1.0
ADMIN_KEY = "gl-bench-console-admin-key-0000000000"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]
# Each page, and what is on screen once its own data is drawn.
PAGES = {
    "playground": "#model option",
    "jobs": "#view table tbody tr",
    "usage": "#usage-charts figure",
    "queue": "#workers tbody tr",
    "models": "section[data-model]",
    "tenants": "#tenants tbody tr",
    "learning": "#tuning-jobs",
    "guards": "#audit",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench console", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--docs", type=Path)
    return p.parse_args(argv)


async def submit_jobs(base_url: str, count: int, concurrency: int = 32) -> float:
    """Submit `count` one-token chat jobs and wait until none is left waiting; the seconds it took."""
    started, sent = time.perf_counter(), 0
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    body = {"url": "/v1/chat/completions",
            "body": {"model": "genloom-text-mini", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}}

    async def submitter(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < count:
            sent += 1
            r = await client.post("/v1/jobs", json=body | {"metadata": {"n": str(sent)}})
            r.raise_for_status()

    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60, trust_env=False) as client:
        await asyncio.gather(*(submitter(client) for _ in range(concurrency)))
        for _ in range(3600):  # until every job has ended
            waiting = [(await client.get("/v1/jobs", params={"state": state, "limit": 1})).json()["data"]
                       for state in ("queued", "processing", "retrying")]
            if not any(waiting):
                break
            await asyncio.sleep(1)
        else:
            raise RuntimeError("the jobs did not all end within an hour")
        for i in range(20):  # some chat traffic for the usage charts
            await client.post("/v1/chat/completions", json={"model": "genloom-text-mini", "max_tokens": 4,
                                                           "messages": [{"role": "user", "content": f"chart {i}"}]})
    return time.perf_counter() - started


def measure(base_url: str, rounds: int) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    seen: dict[str, list[float]] = {page: [] for page in PAGES}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base_url}/console")
        page.fill("#key", ADMIN_KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#nav:not([hidden])")
        seen["jobs, whole page reloaded"] = []
        for _ in range(rounds):
            page.goto(f"{base_url}/console#/jobs")
            page.wait_for_selector(PAGES["jobs"])
            started = time.perf_counter()
            page.reload()  # the HTML, script and style fetched again, then the jobs
            page.wait_for_selector(PAGES["jobs"], state="attached", timeout=30_000)
            seen["jobs, whole page reloaded"].append(time.perf_counter() - started)
            for name, ready_selector in PAGES.items():
                page.goto(f"{base_url}/console#/")  # away first, so every page opens from scratch
                page.wait_for_load_state("load")
                started = time.perf_counter()
                page.goto(f"{base_url}/console#/{name}")
                page.wait_for_selector(ready_selector, state="attached", timeout=30_000)
                seen[name].append(time.perf_counter() - started)
        browser.close()
    return seen


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = {"data_dir": str(root / "data"), "auth": "enabled", "admin_key": ADMIN_KEY,
                  "runtime": {"max_batch_size": 32}}
        with serving(config, root) as base_url:
            filled_s = asyncio.run(submit_jobs(base_url, args.jobs))
            with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
                total = len(http.get("/v1/jobs", params={"limit": 100}).json()["data"])
            print(f"{args.jobs} jobs in {filled_s:.0f} s; the first page lists {total}", flush=True)
            seen = measure(base_url, args.rounds)
    worst = max(statistics.median(v) for v in seen.values())
    lines = [
        f"`{' '.join(['genloom bench console', *map(shlex.quote, argv)])}`, {datetime.date.today()}, {code_state()}, on "
        f"{cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}, Debian's Chromium (headless) driven by "
        f"Playwright. `genloom serve` with the built-in models, {args.jobs:,} completed async jobs in its SQLite store "
        f"(submitted through the API in {filled_s:.0f} s) and some chat traffic; each page opened {args.rounds} times "
        "(from another page, so from scratch), timed from asking for it to its own data on screen.",
        "",
        "| page | median s | worst s |",
        "|---|---:|---:|",
        *[f"| {name} | {statistics.median(v):.3f} | {max(v):.3f} |" for name, v in seen.items()],
        "",
        f"Target (the console issue): every page interactive within {GOAL_S:g} s with 10,000 jobs in the store: "
        f"{'met' if worst <= GOAL_S else 'missed'} (slowest median {worst:.3f} s).",
    ]
    publish(SECTION, lines, args.docs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
