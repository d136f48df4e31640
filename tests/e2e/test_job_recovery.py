"""Kill `genloom serve` with SIGKILL while jobs are queued, running and being submitted; start it
again on the same data dir: every accepted job ends, with exactly one stored result."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.e2e.test_serve import serve, tiny_config

TERMINAL = {"completed", "failed", "cancelled"}


def all_jobs(http: httpx.Client) -> list[dict]:
    jobs, after = [], None
    while True:
        page = http.get("/v1/jobs", params={"limit": 100} | ({"after": after} if after else {})).json()
        jobs += page["data"]
        if not page["has_more"]:
            return jobs
        after = page["last_id"]


def test_sigkill_loses_no_accepted_job_and_each_ends_with_one_result(tmp_path, tiny_model_dir):
    config = tiny_config(
        tiny_model_dir,
        runtime={"max_batch_size": 4, "realtime_reserved_rows": 0},
        jobs={"lease_s": 2, "heartbeat_s": 0.5, "max_attempts": 3},
    )
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100, "ignore_eos": True}
    accepted: list[str] = []
    with serve(tmp_path, config) as (base, proc):
        http = httpx.Client(base_url=base, timeout=10)
        for _ in range(16):
            accepted.append(http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body}).json()["id"])

        def keep_submitting() -> None:  # still submitting when the kill lands
            with httpx.Client(base_url=base, timeout=5) as submitter:
                for _ in range(200):
                    time.sleep(0.05)
                    try:
                        answer = submitter.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
                    except httpx.TransportError:
                        return
                    if answer.status_code == 202:
                        accepted.append(answer.json()["id"])
                    if len(accepted) >= 40:
                        return

        submitter = threading.Thread(target=keep_submitting)
        submitter.start()
        deadline = time.monotonic() + 60
        while True:
            states = [j["status"] for j in all_jobs(http)]
            if states.count("completed") >= 2 and "processing" in states and "queued" in states:
                break
            assert time.monotonic() < deadline, f"never saw completed, processing and queued together: {states}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        submitter.join(10)

    with serve(tmp_path, config) as (base, _):
        http = httpx.Client(base_url=base, timeout=10)
        deadline = time.monotonic() + 120
        while True:
            jobs = {j["id"]: j for j in all_jobs(http)}
            if all(jobs.get(job_id, {}).get("status") in TERMINAL for job_id in accepted):
                break
            assert time.monotonic() < deadline, "not every accepted job finished after the restart"
            time.sleep(0.2)
        assert set(accepted) <= set(jobs), "an accepted job was lost"
        full = {job_id: http.get(f"/v1/jobs/{job_id}").json() for job_id in accepted}

    interrupted = 0
    for job in full.values():
        assert job["status"] == "completed", job
        assert job["result"]["usage"]["completion_tokens"] == 100
        assert [t["status"] for t in job["transitions"]].count("completed") == 1
        if "retrying" in [t["status"] for t in job["transitions"]]:
            interrupted += 1
            assert job["attempts"] == 2
    print(f"{len(accepted)} jobs accepted, {interrupted} interrupted")
    assert interrupted >= 1  # the jobs running at the kill were reclaimed and run again


@pytest.mark.slow
def test_sigkill_at_random_points_50_times_the_database_opens_and_every_accepted_job_finishes(tmp_path, tiny_model_dir):
    """50 runs of `genloom serve` on one data dir, each SIGKILLed at a random moment (while
    starting, migrating, recovering, taking submissions, running jobs); then one run to the end."""
    rng = random.Random(12)
    config = tiny_config(
        tiny_model_dir, runtime={"max_batch_size": 4, "realtime_reserved_rows": 0},
        jobs={"lease_s": 1, "heartbeat_s": 0.3, "max_attempts": 100},
    )
    config_file = tmp_path / "genloom.yaml"
    config_file.write_text(yaml.safe_dump(config))
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 40, "ignore_eos": True}
    accepted: list[str] = []
    for run in range(50):
        port = free_port()
        with open(tmp_path / f"run-{run}.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "genloom.cli", "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
                 "--config", str(config_file)], stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
            )
            stop = threading.Event()

            def submit() -> None:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
                    while not stop.is_set():
                        try:
                            answer = http.post("/v1/jobs", json={"url": "/v1/chat/completions", "body": body})
                        except httpx.TransportError:
                            time.sleep(0.05)
                            continue
                        if answer.status_code == 202:
                            accepted.append(answer.json()["id"])
                        time.sleep(0.1)

            submitter = threading.Thread(target=submit)
            submitter.start()
            if rng.random() < 0.2:  # while starting: migrating, loading, recovering
                time.sleep(rng.uniform(0.2, 3.0))
            else:  # while serving: taking submissions and running jobs
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.1)
                time.sleep(rng.uniform(0.1, 3.0))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            stop.set()
            submitter.join(10)
    assert len(accepted) >= 50, f"only {len(accepted)} jobs were accepted over 50 runs"

    with serve(tmp_path, config, ready_within_s=120) as (base, _):
        http = httpx.Client(base_url=base, timeout=10)
        deadline = time.monotonic() + 300
        while True:
            jobs = {j["id"]: j for j in all_jobs(http)}
            if all(jobs.get(job_id, {}).get("status") in TERMINAL for job_id in accepted):
                break
            assert time.monotonic() < deadline, "not every accepted job finished after 50 kills"
            time.sleep(0.5)
        full = {job_id: http.get(f"/v1/jobs/{job_id}").json() for job_id in accepted}
    for job in full.values():
        assert job["status"] == "completed", job
        assert [t["status"] for t in job["transitions"]].count("completed") == 1
    database = sqlite3.connect(tmp_path / "data" / "genloom.db")
    try:
        assert database.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        database.close()
