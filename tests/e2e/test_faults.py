"""Faults with real processes and real servers: a port already taken, a model nobody runs, Redis
killed and restarted under load, PostgreSQL connections cut, a hung worker.

Redis faults use a private `redis-server` of the test's own on a free port (the shared one on
:6379 is never touched); PostgreSQL faults terminate this test's own database's connections."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import openai
import pytest
import redis
import yaml

from tests.conftest import free_port
from tests.e2e.test_job_recovery import TERMINAL, all_jobs
from tests.services import _admin as admin_sql
from tests.e2e.test_scale_out import ADMIN_KEY, HELLO, admin_client, completed_events, process, serving

REDIS_SERVER = "/usr/bin/redis-server"


class PrivateRedis:
    """A redis-server of this test's own, to kill and start again on the same port."""

    def __init__(self, directory: Path, *, persistent: bool) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._directory = directory
        self._persistent = persistent
        self._proc: subprocess.Popen | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self._persistent else ["--appendonly", "no"]
        self._proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self._directory), "--logfile", str(self._directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "the private redis-server did not start"
            time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait(10)
        self._proc = None

    def stop(self) -> None:
        if self._proc is not None:
            self.kill()


@contextmanager
def private_redis(directory: Path, *, persistent: bool) -> Iterator[PrivateRedis]:
    if not Path(REDIS_SERVER).exists():
        pytest.skip("redis-server is not installed")  # scripts/services.sh installs it in CI
    server = PrivateRedis(directory, persistent=persistent)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def submit_jobs(admins: list, count: int, body: dict) -> list[str]:
    """`count` chat jobs through the replicas in turn, 4 at a time; their ids (each got a 202)."""
    def submit(i: int) -> str:
        answer = admins[i % len(admins)].post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(submit, range(count)))


def write_config(tmp_path: Path, tiny_model_dir: Path, **extra) -> Path:
    config = {
        "builtin_models": False,
        "models": [{"name": "tiny", "path": str(tiny_model_dir)}],
        "runtime": {"max_batch_size": 8, "realtime_reserved_rows": 2, "torch_threads": 1},
        "queue": {"lease_s": 3, "max_queued_async": 10_000, "tenant_max_share": 1.0, "heartbeat_s": 0.5, "worker_ttl_s": 2},
        "jobs": {"lease_s": 3, "heartbeat_s": 0.5, "max_attempts": 5, "retry_base_s": 0.2, "retry_max_s": 1, "sweep_s": 2},
        "cache": {"enabled": False},
        **extra,
    }
    path = tmp_path / "genloom.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def environment(tmp_path: Path, postgres_url: str, redis_url: str, prefix: str) -> dict[str, str]:
    return {
        "GENLOOM_DATABASE_URL": postgres_url, "GENLOOM_REDIS_URL": redis_url, "GENLOOM_REDIS_PREFIX": prefix,
        "GENLOOM_ADMIN_KEY": ADMIN_KEY, "GENLOOM_DATA_DIR": str(tmp_path / "data"),
    }


def wait_until(condition, timeout_s: float, what: str, step_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(step_s)


def client_for(base: str, timeout_s: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=timeout_s)


# -- a port already taken -----------------------------------------------------------------------


@contextmanager
def running(args: list[str], env: dict[str, str], cwd: Path) -> Iterator[tuple[subprocess.Popen, list[str]]]:
    """A genloom process whose output lines gather in a list as they come; terminated at the end."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "genloom.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, cwd=cwd,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def test_a_worker_on_a_taken_port_exits_at_once_and_port_0_picks_a_free_one(
    tmp_path, tiny_model_dir, postgres_url, redis_prefix
):
    from tests.services import REDIS

    config = write_config(tmp_path, tiny_model_dir)
    env = environment(tmp_path, postgres_url, REDIS, redis_prefix)
    common = ["--config", str(config)]
    with process(tmp_path, "worker-1", ["worker", *common], env) as (worker_base, _), \
            process(tmp_path, "api", ["serve", "--role", "api", *common], env) as (api, _):
        port = worker_base.rsplit(":", 1)[1]
        started = time.monotonic()
        second = subprocess.run(
            [sys.executable, "-m", "genloom.cli", "worker", *common, "--port", port],
            capture_output=True, text=True, env={**os.environ, **env}, cwd=tmp_path, timeout=60,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"cannot listen on 127.0.0.1:{port} (server.port)" in second.stderr
        assert "Traceback" not in second.stderr + second.stdout
        assert time.monotonic() - started < 30

        # Port 0: a free port, logged at start and shown in the cluster's worker list.
        with running(["worker", *common, "--port", "0"], {**os.environ, **env}, tmp_path) as (proc, lines):
            line = wait_until(lambda: next((l for l in lines if "health on" in l), None), 90, "the health URL in the log")
            url = line.rsplit("health on ", 1)[1].strip()
            assert url != worker_base
            wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 60, "the second worker ready")
            listed = wait_until(
                lambda: [w for w in admin_workers(api) if w["live"] and w["health_url"] in (url, worker_base)], 30,
                "both workers listed", step_s=0.2,
            )
            wait_until(lambda: len([w for w in admin_workers(api) if w["live"]]) == 2, 30, "two live workers")
            assert {w["health_url"] for w in admin_workers(api)} == {url, worker_base}
            assert all(m["model"] == "tiny@v1" and m["state"] == "running" for w in listed for m in w["models"])


def admin_workers(base: str) -> list[dict]:
    return admin_client(base).get("/v1/admin/workers").json()["data"]


# -- no worker for a model ----------------------------------------------------------------------


def test_a_model_without_a_worker_is_refused_at_once_its_jobs_wait_and_a_hung_worker_ends_requests_in_time(
    tmp_path, tiny_model_dir, postgres_url, redis_prefix
):
    from tests.services import REDIS

    tiers = {name: {"weight": w, "max_wait_s": 2, "timeout_s": 3} for name, w in (("premium", 6), ("standard", 3), ("free", 1))}
    config = write_config(tmp_path, tiny_model_dir)
    data = yaml.safe_load(config.read_text())
    data["queue"]["tiers"] = tiers
    config.write_text(yaml.safe_dump(data))
    env = environment(tmp_path, postgres_url, REDIS, redis_prefix)
    common = ["--config", str(config)]
    with process(tmp_path, "api", ["serve", "--role", "api", *common], env, ready=serving) as (api, _):
        client, admin = client_for(api), admin_client(api)
        ready = wait_until(lambda: (r := httpx.get(f"{api}/readyz")).json().get("models_without_workers") is not None and r, 10, "a view of the workers")
        assert ready.status_code == 503
        assert ready.json()["status"] == "no_workers" and ready.json()["models_without_workers"] == ["tiny@v1"]

        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
        assert time.monotonic() - started < 3, "a request for a model without a worker must not wait"
        assert refused.value.status_code == 503
        assert refused.value.body["code"] == "no_worker" and refused.value.response.headers["retry-after"]
        with pytest.raises(openai.APIStatusError) as streamed:
            client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, stream=True)
        assert streamed.value.status_code == 503 and streamed.value.body["code"] == "no_worker"

        # An async job is accepted and waits, saying why.
        job = admin.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": {"model": "tiny", "messages": HELLO, "max_tokens": 4}})
        assert job.status_code == 202, job.text
        view = admin.get(f"/v1/jobs/{job.json()['id']}").json()
        assert view["status"] == "queued" and "no worker is running model tiny@v1" in view["waiting_reason"]

        with process(tmp_path, "worker", ["worker", *common], env) as (worker_base, worker):
            wait_until(lambda: httpx.get(f"{api}/readyz").status_code == 200, 15, "the API replica to see the worker")
            assert httpx.get(f"{api}/readyz").json()["models_without_workers"] == []
            done = wait_until(lambda: (v := admin.get(f"/v1/jobs/{job.json()['id']}").json())["status"] in TERMINAL and v, 60, "the job")
            assert done["status"] == "completed" and done["waiting_reason"] is None
            assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4).choices[0].message.content

            # The card is as of the last heartbeat: once the last request's row has left, it says so.
            [card] = wait_until(lambda: (cards := admin_workers(api)) and cards[0]["models"][0]["occupancy"] == 0 and cards,
                                10, "the worker's card to show its batch empty")
            assert card["live"] and card["state"] == "ready" and card["pid"] == worker.pid
            assert card["health_url"] == worker_base and card["seconds_since_heartbeat"] < 3
            assert card["models"] == [{"model": "tiny@v1", "kind": "text", "state": "running", "capacity": 8,
                                       "occupancy": 0, "reason": None, "batch_of": None}]
            listed = subprocess.run(
                [sys.executable, "-m", "genloom.cli", "workers", "--url", api, "--api-key", ADMIN_KEY, "--json"],
                capture_output=True, text=True, timeout=60,
            )
            assert listed.returncode == 0, listed.stderr
            assert [w["pid"] for w in json.loads(listed.stdout)] == [worker.pid]

            # A hung worker (SIGSTOP): a request it would take ends within its tier's bound (3 s here).
            worker.send_signal(signal.SIGSTOP)
            try:
                stopped_at = time.monotonic()
                with pytest.raises(openai.APIStatusError) as stuck:
                    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
                waited = time.monotonic() - stopped_at
                assert waited < 8, f"a request for a hung worker took {waited:.1f} s to end"
                # Refused at once if the replica already saw the heartbeats stop, else timed out in line.
                assert (stuck.value.status_code, stuck.value.body["code"]) in ((503, "no_worker"), (503, "queue_timeout"))
                # Its heartbeats stopped: the replica refuses new requests at once, and lists it as lost.
                wait_until(lambda: httpx.get(f"{api}/readyz").status_code == 503, 15, "the replica to notice the hung worker")
                with pytest.raises(openai.APIStatusError) as refused:
                    client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
                assert refused.value.body["code"] == "no_worker"
                assert [w["state"] for w in admin_workers(api)] == ["lost"]
            finally:
                worker.send_signal(signal.SIGCONT)
            wait_until(lambda: httpx.get(f"{api}/readyz").status_code == 200, 15, "the worker back")
            assert client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4).choices[0].message.content

            worker.terminate()
            assert worker.wait(60) == 0
        # A drained worker withdraws its card at once; the replica reads that within a heartbeat.
        assert admin_workers(api) == []
        wait_until(lambda: httpx.get(f"{api}/readyz").json().get("models_without_workers") == ["tiny@v1"], 10,
                   "the replica to see no worker")
        with pytest.raises(openai.APIStatusError) as refused:
            client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
        assert refused.value.body["code"] == "no_worker"


# -- Redis killed and restarted -----------------------------------------------------------------


class RealtimeProbe:
    """Realtime requests one after another on a thread, each outcome kept: (start, seconds, outcome),
    where outcome is "ok" or the HTTP status and error code."""

    def __init__(self, bases: list[str], timeout_s: float, threads: int = 3) -> None:
        self.outcomes: list[tuple[float, float, str]] = []
        self._clients = [client_for(base, timeout_s) for base in bases]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> RealtimeProbe:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _run(self, i: int) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._clients[i % len(self._clients)].chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
                outcome = "ok"
            except openai.APIStatusError as e:
                outcome = f"{e.status_code} {(e.body or {}).get('code') if isinstance(e.body, dict) else e.body}"
            except openai.APIConnectionError as e:  # a timeout: the request hung
                outcome = f"hung {type(e).__name__}"
            self.outcomes.append((started, time.monotonic() - started, outcome))
            i += 1
            time.sleep(0.1)


def redis_outage(tmp_path, tiny_model_dir, postgres_url, redis_prefix, *, persistent: bool, replicas: int, workers: int, jobs: int):
    """API replicas and workers on a private Redis; `jobs` async jobs and realtime traffic; Redis
    SIGKILLed once some jobs are done and started again 3 s later. Every accepted job completes
    exactly once; realtime requests meanwhile end quickly with a 503, never a 500 or a hang; all
    resume by themselves within 5 s of Redis returning."""
    tiers = {name: {"weight": w, "max_wait_s": 3, "timeout_s": 3} for name, w in (("premium", 6), ("standard", 3), ("free", 1))}
    config = write_config(tmp_path, tiny_model_dir)
    data = yaml.safe_load(config.read_text())
    data["queue"]["tiers"] = tiers
    config.write_text(yaml.safe_dump(data))
    common = ["--config", str(config)]
    with private_redis(tmp_path / "redis", persistent=persistent) as server, ExitStack() as stack, ThreadPoolExecutor(4) as pool:
        env = environment(tmp_path, postgres_url, server.url, redis_prefix)
        started = [pool.submit(stack.enter_context, process(tmp_path, f"worker-{i}", ["worker", *common], env)) for i in range(workers)]
        [s.result() for s in started]
        started = [
            pool.submit(stack.enter_context, process(tmp_path, f"api-{i}", ["serve", "--role", "api", *common], env))
            for i in range(replicas)
        ]
        bases = [s.result()[0] for s in started]
        admins = [admin_client(base) for base in bases]
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 24, "ignore_eos": True}

        accepted = submit_jobs(admins, jobs, body)

        with RealtimeProbe(bases, timeout_s=15) as probe:
            wait_until(lambda: sum(j["status"] == "completed" for j in all_jobs(admins[0])) >= jobs // 10, 120, "a tenth of the jobs done")
            server.kill()
            killed_at = time.monotonic()
            time.sleep(5)  # longer than the realtime bound (3 s): requests in flight at the kill end meanwhile
            server.start()
            back_at = time.monotonic()
            wait_until(lambda: any(s > back_at and o == "ok" for s, _, o in probe.outcomes), 30, "a realtime answer after Redis came back")
            time.sleep(1)

        def finished():
            listed = {j["id"]: j for j in all_jobs(admins[-1])}
            return all(listed.get(job_id, {}).get("status") in TERMINAL for job_id in accepted) and listed

        listed = wait_until(finished, 180, "every accepted job to finish after the outage", step_s=0.5)
        assert {listed[job_id]["status"] for job_id in accepted} == {"completed"}
        completions = asyncio.run(completed_events(postgres_url))
        assert all(completions[job_id] == 1 for job_id in accepted), "a job was stored as completed more than once"

        during = [(s, d, o) for s, d, o in probe.outcomes if killed_at <= s < back_at]
        assert during, "no realtime request was sent while Redis was down"
        assert all(o.startswith("503 ") for _, _, o in during if o != "ok"), during
        assert all(o.split()[-1] in ("queue_unavailable", "queue_timeout") for _, _, o in during if o != "ok"), during
        assert any(o == "503 queue_unavailable" for _, _, o in during), during
        assert all(d < 8 for _, d, _ in probe.outcomes), [x for x in probe.outcomes if x[1] >= 8]
        assert not [o for _, _, o in probe.outcomes if o.startswith(("500", "hung"))], probe.outcomes
        first_ok = min(s for s, _, o in probe.outcomes if s > back_at and o == "ok")
        assert first_ok - back_at < 5, f"realtime requests resumed {first_ok - back_at:.1f} s after Redis came back"


def test_redis_killed_and_restarted_without_persistence_loses_no_job(tmp_path, tiny_model_dir, postgres_url, redis_prefix):
    redis_outage(tmp_path, tiny_model_dir, postgres_url, redis_prefix, persistent=False, replicas=1, workers=1, jobs=60)


@pytest.mark.slow
@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
def test_redis_restart_under_300_jobs_two_replicas_two_workers(tmp_path, tiny_model_dir, postgres_url, redis_prefix, persistent):
    redis_outage(tmp_path, tiny_model_dir, postgres_url, redis_prefix, persistent=persistent, replicas=2, workers=2, jobs=300)


# -- PostgreSQL connections cut -----------------------------------------------------------------


def cut_connections(postgres_url: str, *, allow_new: bool) -> None:
    """End every connection to the test's database; with allow_new False, refuse new ones too
    (the database is unreachable until allowed again)."""
    name = postgres_url.rsplit("/", 1)[1]
    admin_sql(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"true" if allow_new else "false"}')
    admin_sql(
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )


def test_postgres_connections_cut_under_load_lose_nothing_and_pools_reconnect(tmp_path, tiny_model_dir, postgres_url, redis_prefix):
    from tests.services import REDIS

    config = write_config(tmp_path, tiny_model_dir)
    env = environment(tmp_path, postgres_url, REDIS, redis_prefix)
    common = ["--config", str(config)]
    with process(tmp_path, "worker", ["worker", *common], env), \
            process(tmp_path, "api", ["serve", "--role", "api", *common], env) as (api, _):
        admin = admin_client(api)
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 24, "ignore_eos": True}

        accepted = submit_jobs([admin], 80, body)
        with RealtimeProbe([api], timeout_s=15) as probe:
            time.sleep(1)
            for _ in range(3):  # connections cut while jobs run: every pool meets dead connections
                cut_connections(postgres_url, allow_new=True)
                time.sleep(1)
            cut_connections(postgres_url, allow_new=False)  # then unreachable for 3 s
            try:
                time.sleep(0.5)
                refused = admin.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
                assert refused.status_code == 503, refused.text
                assert refused.json()["error"]["code"] == "store_unavailable"
                assert "Traceback" not in refused.text and refused.headers["retry-after"]
                time.sleep(2.5)
            finally:
                cut_connections(postgres_url, allow_new=True)
            back_at = time.monotonic()
            wait_until(lambda: admin.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body}).status_code == 202,
                       10, "job submissions after the database came back")
            time.sleep(1)

        def finished():
            try:
                listed = {j["id"]: j for j in all_jobs(admin)}
            except (KeyError, httpx.HTTPError):
                return None
            return all(listed.get(job_id, {}).get("status") in TERMINAL for job_id in accepted) and listed

        listed = wait_until(finished, 180, "every accepted job to finish", step_s=0.5)
        assert {listed[job_id]["status"] for job_id in accepted} == {"completed"}
        completions = asyncio.run(completed_events(postgres_url))
        assert all(completions[job_id] == 1 for job_id in accepted), "a job was stored as completed more than once"
        assert not [o for _, _, o in probe.outcomes if o.startswith(("500", "hung"))], probe.outcomes
        assert all(o == "ok" or o.startswith("503 ") for _, _, o in probe.outcomes), probe.outcomes
        assert any(s > back_at and o == "ok" for s, _, o in probe.outcomes)


# -- disk full ----------------------------------------------------------------------------------


@contextmanager
def small_disk(path: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of `size_mb` MiB at `path` (needs root; this machine's CI runs as root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the disk is full; the file, to delete to free the space."""
    filler = directory / "filler"
    # Unbuffered: a buffered file keeps the bytes of a refused write and raises ENOSPC again at close.
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 1):  # down to the last byte
            chunk = b"\0" * size
            try:
                while True:
                    f.write(chunk)
            except OSError:
                pass
    return filler


def test_a_full_disk_is_a_clear_507_with_nothing_half_stored_and_it_recovers(tmp_path, tiny_model_dir, tiny_image_model_dir):
    models = [{"name": "tiny", "path": str(tiny_model_dir)},
              {"name": "tiny-sd", "path": str(tiny_image_model_dir), "kind": "image", "default_steps": 2}]
    config = {"builtin_models": False, "models": models, "cache": {"enabled": False},
              "jobs": {"sweep_s": 1, "retry_base_s": 0.2, "retry_max_s": 1, "lease_s": 3, "heartbeat_s": 0.5}}
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    with small_disk(tmp_path / "disk", 24) as data_dir:
        env = {"GENLOOM_DATA_DIR": str(data_dir), "GENLOOM_ADMIN_KEY": ADMIN_KEY}
        with process(tmp_path, "serve", ["serve", "--config", str(tmp_path / "genloom.yaml")], env) as (base, _):
            admin, client = admin_client(base), client_for(base)
            body = {"model": "tiny", "messages": HELLO, "max_tokens": 8}

            def submit():
                return admin.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})

            before = [submit().json()["id"] for _ in range(3)]
            filler = fill(data_dir)
            answers = [submit() for _ in range(20)]
            statuses = {a.status_code for a in answers}
            assert statuses <= {202, 507}, [a.text for a in answers if a.status_code not in (202, 507)]
            assert 507 in statuses, "no job submission was refused with the disk full"
            refused = next(a for a in answers if a.status_code == 507).json()["error"]
            assert refused["code"] == "insufficient_storage" and "disk is full" in refused["message"]
            accepted = before + [a.json()["id"] for a in answers if a.status_code == 202]
            with pytest.raises(openai.APIStatusError) as picture:
                client.images.generate(model="tiny-sd", prompt="a red circle", size="32x32", response_format="b64_json")
            assert picture.value.status_code == 507 and picture.value.body["code"] == "insufficient_storage"
            try:  # a chat answer needs no disk: it is answered, or refused the same clear way
                client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
            except openai.APIStatusError as e:
                assert e.status_code == 507, e.body

            filler.unlink()
            wait_until(lambda: submit().status_code == 202, 20, "job submissions once space is free")
            image = client.images.generate(model="tiny-sd", prompt="a red circle", size="32x32", response_format="b64_json")
            assert image.data[0].b64_json

            def finished():
                listed = {j["id"]: j for j in all_jobs(admin)}
                return all(listed.get(i, {}).get("status") in TERMINAL for i in accepted) and listed

            listed = wait_until(finished, 60, "every accepted job to finish")
            assert {listed[i]["status"] for i in accepted} == {"completed"}
        database = sqlite3.connect(data_dir / "genloom.db")
        try:
            assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        finally:
            database.close()


# -- a hung worker ------------------------------------------------------------------------------


def test_a_hung_worker_loses_its_jobs_to_another_and_carries_on_when_it_wakes(tmp_path, tiny_model_dir, postgres_url, redis_prefix):
    from tests.e2e.test_scale_out import leases_held
    from tests.services import REDIS

    config = write_config(tmp_path, tiny_model_dir)
    env = environment(tmp_path, postgres_url, REDIS, redis_prefix)
    common = ["--config", str(config)]
    with ExitStack() as stack:
        _, hung = stack.enter_context(process(tmp_path, "worker-1", ["worker", *common], env))
        _, other = stack.enter_context(process(tmp_path, "worker-2", ["worker", *common], env))
        api, _ = stack.enter_context(process(tmp_path, "api", ["serve", "--role", "api", *common], env))
        admin = admin_client(api)
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 24, "ignore_eos": True}

        accepted = submit_jobs([admin], 80, body)
        wait_until(lambda: asyncio.run(leases_held(postgres_url, hung.pid)) >= 1, 60, "worker 1 to hold a job", step_s=0.02)
        hung.send_signal(signal.SIGSTOP)
        try:
            time.sleep(8)  # well past its leases (3 s): the other worker takes its jobs
        finally:
            hung.send_signal(signal.SIGCONT)

        def finished(ids):
            listed = {j["id"]: j for j in all_jobs(admin)}
            return all(listed.get(i, {}).get("status") in TERMINAL for i in ids) and listed

        listed = wait_until(lambda: finished(accepted), 120, "every job to finish", step_s=0.5)
        assert {listed[i]["status"] for i in accepted} == {"completed"}
        assert any(listed[i]["attempts"] >= 2 for i in accepted), "no job was taken from the hung worker"
        completions = asyncio.run(completed_events(postgres_url))
        assert all(completions[i] == 1 for i in accepted), "a late result from the hung worker was stored too"

        # It carries on: with the other worker stopped now, new jobs still finish (on it).
        wait_until(lambda: [w["state"] for w in admin_workers(api)] == ["ready", "ready"], 15, "both workers live")
        other.send_signal(signal.SIGSTOP)
        try:
            later = submit_jobs([admin], 10, body)
            listed = wait_until(lambda: finished(later), 60, "the woken worker to run new jobs", step_s=0.5)
            assert {listed[i]["status"] for i in later} == {"completed"}
        finally:
            other.send_signal(signal.SIGCONT)
        assert "Traceback" not in (tmp_path / "worker-1.log").read_text()
