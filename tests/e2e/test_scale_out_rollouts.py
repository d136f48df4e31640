"""A canary across two API replicas and two workers on the real PostgreSQL and Redis: a version
registered on one replica is loaded by every process; both replicas split traffic alike and
count it in one shared window; a rollback on one replica holds on the other at once."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.test_scale_out import HELLO, admin_client, cluster  # noqa: F401  (the cluster fixture)


def loaded_everywhere(replicas: list[httpx.Client], version: str) -> None:
    deadline = time.monotonic() + 90
    for http in replicas:
        while not http.get(f"/v1/admin/models/tiny/versions/{version}").json().get("loaded_here"):
            assert time.monotonic() < deadline, f"tiny@{version} was not loaded by {http.base_url}"
            time.sleep(0.1)


def test_a_canary_holds_across_two_replicas_with_shared_gate_figures(cluster, tiny_model_dir):  # noqa: F811
    (api1, api2), _, _, _ = cluster
    replicas = [admin_client(api1), admin_client(api2)]
    # Four processes started together and registered the config's model once.
    assert [v["id"] for v in replicas[1].get("/v1/admin/models/tiny").json()["versions"]] == ["tiny@v1"]
    registered = replicas[0].post("/v1/admin/models", json={"name": "tiny", "path": str(tiny_model_dir)})
    assert registered.status_code == 201 and registered.json()["id"] == "tiny@v2", registered.text
    loaded_everywhere(replicas, "v2")
    deadline = time.monotonic() + 60
    while True:  # and both workers run it (until then a replica sends the candidate's share to stable)
        cards = replicas[0].get("/v1/admin/workers").json()["data"]
        running = [{m["model"] for m in card["models"] if m["state"] == "running"} for card in cards if card["live"]]
        if len(running) == 2 and all("tiny@v2" in models for models in running):
            break
        assert time.monotonic() < deadline, cards
        time.sleep(0.1)
    time.sleep(1.5)  # a heartbeat read by both replicas
    started = replicas[1].post("/v1/admin/models/tiny/rollouts", json={
        "strategy": "canary", "candidate": "v2", "percent": 20, "step_after_requests": 100_000,
    })
    assert started.status_code == 201, started.text
    deadline = time.monotonic() + 10
    while replicas[0].get("/v1/admin/models/tiny/rollouts/current").status_code != 200:  # heard through Redis
        assert time.monotonic() < deadline
        time.sleep(0.05)

    def ask(i: int) -> str:
        reply = replicas[i % 2].post("/v1/chat/completions", json={"model": "tiny", "messages": HELLO, "max_tokens": 1})
        assert reply.status_code == 200, reply.text
        return reply.headers["x-genloom-model-version"]

    with ThreadPoolExecutor(8) as pool:
        served = Counter(pool.map(ask, range(400)))
    assert 0.15 <= served["tiny@v2"] / 400 <= 0.25, served

    deadline = time.monotonic() + 10
    while True:  # either replica's figures count both replicas' requests
        figures = [r.get("/v1/admin/models/tiny/rollouts/current").json()["figures"] for r in replicas]
        counts = [(f["candidate"]["requests"], f["stable"]["requests"]) for f in figures]
        if counts == [(served["tiny@v2"], served["tiny@v1"])] * 2:
            break
        assert time.monotonic() < deadline, (counts, served)
        time.sleep(0.1)

    assert replicas[0].post("/v1/admin/models/tiny/rollouts/current/rollback").status_code == 200
    deadline = time.monotonic() + 5
    while replicas[1].get("/v1/admin/models/tiny/rollouts/current").status_code != 404:
        assert time.monotonic() < deadline, "the other replica still splits traffic after the rollback"
        time.sleep(0.05)
    assert {ask(i) for i in range(20)} == {"tiny@v1"}
