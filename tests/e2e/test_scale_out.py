"""Scaled out on the real servers: two API replicas (`genloom serve --role api`) and two worker
processes (`genloom worker`) sharing PostgreSQL and Redis, all talking real HTTP.

500 jobs go in through both replicas; one worker is SIGKILLed in the middle of a batch; every
job still ends completed with exactly one stored result. Streams work through either replica,
a tenant's limit of N requests a minute admits N across both replicas together, and a job
cancelled on one replica stops on the worker running it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest
import yaml

from tests.conftest import free_port
from tests.e2e.test_job_recovery import TERMINAL, all_jobs
from tests.services import REDIS, REDIS_TIMEOUTS

ADMIN_KEY = "gl-scale-out-test-admin-key-0123456789"
HELLO = [{"role": "user", "content": "hello"}]


def serving(answer: httpx.Response) -> bool:
    """An API replica serves: its models are loaded, though no worker may run them yet."""
    return answer.status_code == 200 or answer.json().get("status") == "no_workers"


@contextmanager
def process(
    tmp_path: Path, name: str, args: list[str], env: dict[str, str],
    ready: Callable[[httpx.Response], bool] = lambda answer: answer.status_code == 200,
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A genloom process on a free port, ready (by default: its /readyz answers 200); killed at the end."""
    port = free_port()
    log_path = tmp_path / f"{name}.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "genloom.cli", *args, "--port", str(port)], stdout=log, stderr=subprocess.STDOUT,
        cwd=tmp_path, env={**os.environ, **env},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, f"{name} exited:\n" + log_path.read_text()
            try:
                if ready(httpx.get(f"{base}/readyz", timeout=2)):
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{name} not ready in time:\n" + log_path.read_text()
            time.sleep(0.1)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()


@pytest.fixture()
def cluster(tmp_path, tiny_model_dir, postgres_url, redis_prefix):
    """Two API replicas and two workers; yields (api bases, worker processes, env)."""
    config = {
        "builtin_models": False,
        "models": [{"name": "tiny", "path": str(tiny_model_dir)}],
        "runtime": {"max_batch_size": 8, "realtime_reserved_rows": 2, "torch_threads": 1},
        "queue": {"lease_s": 3, "max_queued_async": 10_000, "tenant_max_share": 1.0},
        "jobs": {"lease_s": 3, "heartbeat_s": 0.5, "max_attempts": 3, "retry_base_s": 0.2, "retry_max_s": 1, "sweep_s": 2},
        "cache": {"enabled": False},
    }
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    env = {
        "GENLOOM_DATABASE_URL": postgres_url, "GENLOOM_REDIS_URL": REDIS, "GENLOOM_REDIS_PREFIX": redis_prefix,
        "GENLOOM_ADMIN_KEY": ADMIN_KEY, "GENLOOM_DATA_DIR": str(tmp_path / "data"),
    }
    common = ["--config", str(tmp_path / "genloom.yaml")]
    with ExitStack() as stack, ThreadPoolExecutor(4) as pool:
        starting = [
            pool.submit(stack.enter_context, process(tmp_path, name, [*args, *common], env))
            for name, args in (
                ("api-1", ["serve", "--role", "api"]), ("api-2", ["serve", "--role", "api"]),
                ("worker-1", ["worker"]), ("worker-2", ["worker"]),
            )
        ]
        (api1, _), (api2, _), (_, w1), (_, w2) = [s.result() for s in starting]
        yield [api1, api2], [w1, w2], postgres_url, redis_prefix


def admin_client(base: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30)


async def leases_held(postgres_url: str, pid: int) -> int:
    """How many jobs a process holds the lease of now (a lease owner is host:pid:nonce)."""
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM jobs WHERE state = 'processing' AND lease_owner LIKE $1", f"%:{pid}:%"
        )
    finally:
        await conn.close()


async def completed_events(postgres_url: str) -> dict[str, int]:
    """Per job: how many times it was stored as completed (the job_events history)."""
    conn = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT j.id, j.result IS NOT NULL AS has_result, "
            "(SELECT count(*) FROM job_events e WHERE e.job_id = j.id AND e.state = 'completed') AS completions "
            "FROM jobs j"
        )
    finally:
        await conn.close()
    assert all(r["has_result"] for r in rows if r["completions"])
    return {r["id"]: r["completions"] for r in rows}


def test_two_replicas_two_workers_500_jobs_and_a_sigkilled_worker_lose_nothing(cluster):
    (api1, api2), (worker1, worker2), postgres_url, _ = cluster
    replicas = [admin_client(api1), admin_client(api2)]
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 24, "ignore_eos": True}

    def submit(i: int) -> str:
        answer = replicas[i % 2].post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        accepted = list(pool.map(submit, range(500)))
    assert len(set(accepted)) == 500

    # Kill one worker while it holds a batch: some jobs done, some running on it, more waiting.
    deadline = time.monotonic() + 120
    while True:
        states = [j["status"] for j in all_jobs(replicas[0])]
        if states.count("completed") >= 50 and asyncio.run(leases_held(postgres_url, worker1.pid)) >= 1:
            break
        assert time.monotonic() < deadline and states.count("completed") < 500, (
            f"worker 1 was never seen holding a job ({states.count('completed')} completed)"
        )
        time.sleep(0.02)
    worker1.send_signal(signal.SIGKILL)
    worker1.wait(10)

    deadline = time.monotonic() + 240
    while True:
        jobs = {j["id"]: j for j in all_jobs(replicas[1])}
        if all(jobs.get(job_id, {}).get("status") in TERMINAL for job_id in accepted):
            break
        assert time.monotonic() < deadline, "not every job finished after a worker was killed: " + str(
            [(j["id"], j["status"], j.get("attempts")) for j in jobs.values() if j["status"] not in TERMINAL][:10]
        )
        time.sleep(0.5)
    assert {jobs[job_id]["status"] for job_id in accepted} == {"completed"}
    completions = asyncio.run(completed_events(postgres_url))
    assert all(completions[job_id] == 1 for job_id in accepted), "a job was stored as completed more than once"
    results = [replicas[i % 2].get(f"/v1/jobs/{job_id}").json() for i, job_id in enumerate(accepted[:20])]
    assert all(r["result"]["usage"]["completion_tokens"] == 24 for r in results)
    retried = [replicas[0].get(f"/v1/jobs/{job_id}").json() for job_id in accepted]
    # The killed worker's jobs were taken again by the other one.
    assert any(r["attempts"] >= 2 for r in retried), "no job shows the retry after the kill"

    # Streams through either replica, served by the surviving worker: the same text as a plain call.
    for base in (api1, api2):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0)
        plain = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, seed=3)
        stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=16, seed=3, stream=True)
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain.choices[0].message.content
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")


def test_a_rate_limit_holds_across_replicas_and_cancel_reaches_the_worker(cluster, tmp_path):
    (api1, api2), _, _, _ = cluster
    admin = admin_client(api1)
    tenant = admin.post("/v1/admin/tenants", json={"name": "metered", "limits": {"requests_per_minute": 6}}).json()
    key = admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "k"}).json()["key"]
    clients = [openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0) for base in (api1, api2)]

    def one(i: int) -> bool:
        try:
            clients[i % 2].chat.completions.create(model="tiny", messages=HELLO, max_tokens=2)
        except openai.RateLimitError:
            return False
        return True

    with ThreadPoolExecutor(6) as pool:
        admitted = list(pool.map(one, range(20)))
    assert sum(admitted) == 6, f"admitted {sum(admitted)} of 20 across two replicas with a limit of 6/min"

    # A key revoked on one replica is refused by the other at once (within 2 s here, polling),
    # not when its lookup cache (5 s) runs out: the replicas tell each other.
    [key_record] = admin.get(f"/v1/admin/tenants/{tenant['id']}/keys").json()["data"]
    assert admin.delete(f"/v1/admin/keys/{key_record['id']}").status_code == 200
    revoked_at = time.monotonic()
    while True:
        answer = httpx.post(f"{api2}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                            json={"model": "tiny", "messages": HELLO, "max_tokens": 2})
        if answer.status_code == 401:
            break
        assert answer.status_code == 429  # still cached as valid, and over its limit
        assert time.monotonic() - revoked_at < 2.0, "the other replica still took the revoked key"
        time.sleep(0.02)

    # A long job cancelled through the other replica stops on whichever worker runs it.
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 900, "ignore_eos": True}
    job = admin.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body}).json()
    status = admin_client(api2).get("/v1/admin/queue").json()  # the shared line, seen from either replica
    assert status["backend"] == "redis" and set(status["models"]["tiny@v1"]) == {"realtime", "async"}
    other = admin_client(api2)
    deadline = time.monotonic() + 60
    while other.get(f"/v1/jobs/{job['id']}").json()["status"] != "processing":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancelled = other.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    # Had the cancel not reached the worker, it would generate to the end and then find its
    # result refused ("finished but its lease was gone"); it drops the job instead.
    time.sleep(4)
    assert other.get(f"/v1/jobs/{job['id']}").json()["status"] == "cancelled"
    logs = "".join((tmp_path / f"worker-{i}.log").read_text() for i in (1, 2))
    assert f"job {job['id']} finished but its lease was gone" not in logs


def test_sigterm_drains_a_worker_its_batch_finishes_and_nothing_runs_twice(cluster):
    (api1, api2), (worker1, worker2), postgres_url, _ = cluster
    http = admin_client(api1)
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 300, "ignore_eos": True}
    accepted = [http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body}).json()["id"] for _ in range(24)]
    deadline = time.monotonic() + 60
    while sum(j["status"] == "processing" for j in all_jobs(http)) < 8:
        assert time.monotonic() < deadline, "the workers never held a full batch"
        time.sleep(0.05)
    worker1.send_signal(signal.SIGTERM)
    assert worker1.wait(60) == 0  # drained: what it held finished, then a clean exit
    deadline = time.monotonic() + 120
    while not all(j["status"] in TERMINAL for j in all_jobs(http)):
        assert time.monotonic() < deadline, "jobs did not finish after the drain"
        time.sleep(0.2)
    jobs = [http.get(f"/v1/jobs/{job_id}").json() for job_id in accepted]
    assert {j["status"] for j in jobs} == {"completed"}
    # Nothing was abandoned and run again: the drained worker finished its batch, and what it
    # had not taken waited in Redis for the other worker.
    assert [j["attempts"] for j in jobs] == [1] * len(jobs)
    assert all(count == 1 for count in asyncio.run(completed_events(postgres_url)).values())


def test_jobs_survive_redis_losing_every_key(cluster):
    """Redis restarted without persistence, or flushed: the queue, leases and streams are gone.
    Every stored job still completes, once: running ones when their PostgreSQL lease runs out,
    waiting ones when a process's sweep finds them missing from the queue (jobs.sweep_s)."""
    import redis as redis_client

    (api1, _), _, postgres_url, prefix = cluster
    http = admin_client(api1)
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 64, "ignore_eos": True}
    accepted = [http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body}).json()["id"] for _ in range(40)]
    deadline = time.monotonic() + 60
    while sum(j["status"] == "processing" for j in all_jobs(http)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    client = redis_client.Redis.from_url(REDIS, **REDIS_TIMEOUTS)
    lost = list(client.scan_iter(match=f"{prefix}*", count=1000))
    client.delete(*lost)
    assert any(b":j:" in key for key in lost)  # queued jobs were among what was lost
    deadline = time.monotonic() + 120
    while not all(j["status"] in TERMINAL for j in all_jobs(http)):
        assert time.monotonic() < deadline, "jobs lost with Redis's keys never finished"
        time.sleep(0.2)
    ended = [http.get(f"/v1/jobs/{job_id}").json() for job_id in accepted]
    assert {j["status"] for j in ended} == {"completed"}, [j.get("error") for j in ended if j["status"] != "completed"]
    assert all(count == 1 for count in asyncio.run(completed_events(postgres_url)).values())


def test_a_request_while_redis_is_down_gets_a_clear_503(tmp_path, tiny_model_dir, postgres_url, redis_prefix):
    """A Redis of the test's own, stopped under a running API replica."""
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        config = {"builtin_models": False, "models": [{"name": "tiny", "path": str(tiny_model_dir)}], "auth": "disabled"}
        (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
        env = {"GENLOOM_DATABASE_URL": postgres_url, "GENLOOM_REDIS_URL": f"redis://127.0.0.1:{port}/0",
               "GENLOOM_DATA_DIR": str(tmp_path / "data")}
        api = ["serve", "--role", "api", "--config", str(tmp_path / "genloom.yaml")]
        with process(tmp_path, "api", api, env, ready=serving) as (base, _):
            server.terminate()
            server.wait(10)
            # Until then the replica knew there was no worker (503 no_worker); once it cannot read
            # the workers' heartbeats it refuses nothing for that, and the queue answers for itself.
            deadline = time.monotonic() + 10
            while "models_without_workers" in httpx.get(f"{base}/readyz").json():
                assert time.monotonic() < deadline, "the replica never noticed that Redis is gone"
                time.sleep(0.1)
            client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.InternalServerError) as refused:
                client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
            assert refused.value.status_code == 503 and refused.value.response.headers["retry-after"] == "1"
            assert refused.value.body["code"] == "queue_unavailable" and "Traceback" not in refused.value.response.text
            job = httpx.post(f"{base}/v1/jobs", json={"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO}})
            assert job.status_code == 503 and job.json()["error"]["code"] == "queue_unavailable"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
