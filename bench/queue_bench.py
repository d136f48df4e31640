"""Shared-queue throughput: Genloom's Redis queue against Celery on the same Redis, no-op work.

Each run puts N jobs through one Redis with W worker processes and times from the first
submission to the last job done. A job's work is the same in both systems: one Redis INCR
(so the end is observed the same way), one per job. Genloom's jobs carry what its scheduler orders by,
spread over three tiers and 16 tenants with unequal costs, so priority and fair share are on
(every pick runs the full policy); its workers take up to --take jobs per round trip, as a
text or image worker fills a batch. Celery's workers are `celery worker --pool solo` (one
process each, the default prefetch of 4), producing with `apply_async`, results ignored.

Run it as `genloom bench queue --help` or `python bench/queue_bench.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402

SECTION = "## Shared queue: Genloom on Redis vs Celery"
REDIS_URL = os.environ.get("GENLOOM_BENCH_REDIS", "redis://127.0.0.1:6379/0")
TIERS = ["premium", "standard", "free"]


@dataclass
class Run:
    system: str
    workers: int
    jobs: int
    wall_s: float
    submit_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.wall_s


# -- Genloom -------------------------------------------------------------------------------------


def genloom_worker(prefix: str, done_key: str, take: int) -> None:
    """A worker process: take up to `take` jobs, do the no-op, finish them; until told to stop."""
    from genloom.queue import SchedulerPolicy
    from genloom.queue.redis_queue import RedisQueue

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    queue = RedisQueue(client=client, policy=SchedulerPolicy(), prefix=prefix, adopt=lambda job: lambda event: None)
    stop_key = prefix + "bench:stop"
    while not client.exists(stop_key):
        jobs = queue.take(["noop"], max_rows=take, timeout=0.2)
        for job in jobs:
            client.incr(done_key)  # the work, as in Celery's task: one INCR per job
            queue.finish(job)
    queue.stop()


def run_genloom(jobs: int, workers: int, take: int) -> Run:
    from genloom.jobs import Job, RequestClass, Tier
    from genloom.queue import SchedulerPolicy
    from genloom.queue.redis_queue import RedisQueue

    prefix = f"glbench:{uuid.uuid4().hex[:8]}:"
    done_key = prefix + "bench:done"
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    policy = SchedulerPolicy(max_queued={RequestClass.REALTIME: 256, RequestClass.ASYNC: jobs + 1}, tenant_max_share=1.0)
    queue = RedisQueue(client=client, policy=policy, prefix=prefix)
    procs = [
        subprocess.Popen([sys.executable, __file__, "--genloom-worker", prefix, done_key, str(take)])
        for _ in range(workers)
    ]
    time.sleep(2.0)  # workers up and waiting
    rng = random.Random(7)
    started = time.perf_counter()
    for i in range(jobs):
        queue.submit(Job(
            id=f"j{i}", model="noop", payload=None, emit=lambda event: None, request_class=RequestClass.ASYNC,
            tier=Tier(rng.choice(TIERS)), tenant=f"tenant-{rng.randrange(16)}", cost=rng.choice([1.0, 4.0, 16.0]),
        ))
    submitted = time.perf_counter()
    _wait_done(client, done_key, jobs)
    wall = time.perf_counter() - started
    client.set(prefix + "bench:stop", 1)
    for proc in procs:
        proc.wait(30)
    queue.stop()
    _delete(client, prefix)
    return Run("genloom", workers, jobs, wall, submitted - started)


# -- Celery --------------------------------------------------------------------------------------

CELERY_APP = '''
import os
import redis
from celery import Celery

app = Celery("bench", broker=os.environ["BENCH_BROKER"])
app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)
done = redis.Redis.from_url(os.environ["BENCH_REDIS"])


@app.task(name="noop")
def noop():
    done.incr(os.environ["BENCH_DONE"])
'''


def run_celery(jobs: int, workers: int) -> Run:
    tag = uuid.uuid4().hex[:8]
    done_key = f"celerybench:{tag}:done"
    queue_name = f"celerybench-{tag}"
    client = redis.Redis.from_url(REDIS_URL)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "celery_bench_app.py").write_text(CELERY_APP)
        env = {**os.environ, "BENCH_BROKER": REDIS_URL, "BENCH_REDIS": REDIS_URL, "BENCH_DONE": done_key, "PYTHONPATH": folder}
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "celery_bench_app", "worker", "--pool", "solo", "-Q", queue_name,
                 "--loglevel", "WARNING", "-n", f"w{i}-{tag}@%h", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for i in range(workers)
        ]
        sys.path.insert(0, folder)
        os.environ.update(BENCH_BROKER=REDIS_URL, BENCH_REDIS=REDIS_URL, BENCH_DONE=done_key)
        import celery_bench_app  # type: ignore[import-not-found]

        time.sleep(6.0)  # celery workers start slower
        noop = celery_bench_app.noop
        started = time.perf_counter()
        for _ in range(jobs):
            noop.apply_async(queue=queue_name)
        submitted = time.perf_counter()
        _wait_done(client, done_key, jobs)
        wall = time.perf_counter() - started
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(30)
        client.delete(done_key, queue_name)
        for key in client.scan_iter(match=f"*{queue_name}*", count=1000):  # kombu's bindings of the run's queue
            client.delete(key)
        sys.path.remove(folder)
    return Run("celery", workers, jobs, wall, submitted - started)


# -- both ----------------------------------------------------------------------------------------


def _wait_done(client: redis.Redis, key: str, jobs: int, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while int(client.get(key) or 0) < jobs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {int(client.get(key) or 0)} of {jobs} jobs done in {timeout_s} s")
        time.sleep(0.002)


def _delete(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def report(runs: list[Run], args: argparse.Namespace, command: str) -> str:
    lines = [
        SECTION, "",
        f"`{command}` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Redis "
        f"{redis.Redis.from_url(REDIS_URL).info()['redis_version']} on the same machine, {time.strftime('%Y-%m-%d')}.",
        "",
        f"{args.jobs} no-op jobs per run (the work of each: one Redis INCR, in both systems), "
        f"timed from the first submission to the last job done; best of {args.repeats}. Genloom: async jobs over "
        f"3 tiers and 16 tenants with costs 1, 4 and 16 (priority, tier shares, fair share and aging all decided "
        f"in Redis per pick), workers taking up to {args.take} jobs per round trip. Celery {_celery_version()}: "
        "`--pool solo` workers, default prefetch, `apply_async`, results ignored.",
        "",
        "Submit only is the rate one producer process put the jobs in; where the end-to-end rate equals it, "
        "the producer, not the workers, was the bound.",
        "",
        "| system | worker processes | jobs/s (end to end) | submit only (jobs/s) |",
        "|---|---|---|---|",
    ]
    for run in runs:
        lines.append(f"| {run.system} | {run.workers} | {run.jobs_per_s:,.0f} | {run.jobs / run.submit_s:,.0f} |")
    by = {(r.system, r.workers): r for r in runs}
    for workers in args.workers:
        g, c = by.get(("genloom", workers)), by.get(("celery", workers))
        if g and c:
            lines.append("")
            lines.append(f"{workers} worker(s): Genloom {g.jobs_per_s / c.jobs_per_s:.2f}x Celery's throughput.")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _celery_version() -> str:
    import celery

    return celery.__version__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--genloom-worker"]:
        genloom_worker(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(prog="genloom bench queue", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000, help="jobs per run [5000]")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4], help="worker process counts [1 4]")
    parser.add_argument("--take", type=int, default=16, help="most jobs a Genloom worker takes per round trip [16]")
    parser.add_argument("--repeats", type=int, default=2, help="runs per cell; the best counts [2]")
    parser.add_argument("--write", type=Path, help="write the results into this markdown file (e.g. docs/benchmarks.md)")
    parser.add_argument("--json", type=Path, help="write the runs as JSON here")
    args = parser.parse_args(argv)
    try:
        import celery  # noqa: F401
    except ImportError:
        print("this benchmark needs Celery: pip install 'celery[redis]'", file=sys.stderr)
        return 2
    runs = []
    for workers in args.workers:
        for system in ("genloom", "celery"):
            best = None
            for _ in range(args.repeats):
                run = run_genloom(args.jobs, workers, args.take) if system == "genloom" else run_celery(args.jobs, workers)
                print(f"{system} x{workers}: {run.jobs_per_s:,.0f} jobs/s ({run.wall_s:.2f} s)", flush=True)
                best = run if best is None or run.wall_s < best.wall_s else best
            runs.append(best)
    command = "genloom bench queue " + shlex.join(argv)
    text = report(runs, args, command.strip())
    print(text)
    if args.write:
        write_section(args.write, SECTION, text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"jobs_per_s": r.jobs_per_s} for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
