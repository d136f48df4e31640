"""The model registry and rollouts over HTTP, with the official openai client: versions and
aliases, the version header, canary split, automatic rollback, blue-green switch under
concurrent load, state kept across a restart, and bad input."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import running_server
from tests.stub_upstream import Behaviour, StubMode, running_stub

HELLO = [{"role": "user", "content": "hello"}]
VERSION = "x-genloom-model-version"


@pytest.fixture(scope="module")
def stubs() -> Iterator:
    with running_stub(Behaviour(chunks=2)) as good, running_stub(Behaviour(mode=StubMode.ERROR_500)) as bad:
        yield good, bad


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, stubs) -> Iterator:
    good, _ = stubs
    models = [
        {"name": "tiny", "path": str(tiny_model_dir)},
        {"name": "remote", "kind": "remote", "base_url": good.base_url, "upstream_model": "big"},
    ]
    data = tmp_path_factory.mktemp("registry")
    with running_server(data, tiny_model_dir, models=models, upstream_allow_hosts=["127.0.0.1"],
                        routing={"max_attempts_per_model": 1}) as (url, server):
        yield url, server, data


@pytest.fixture()
def admin(served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{served[0]}/v1/admin", timeout=30) as http:
        yield http


@pytest.fixture()
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key="unused", max_retries=0)


def wait_loaded(admin: httpx.Client, name: str, version: str) -> None:
    deadline = time.monotonic() + 60
    while not admin.get(f"/models/{name}/versions/{version}").json()["loaded_here"]:
        assert time.monotonic() < deadline, f"{name}@{version} did not load"
        time.sleep(0.05)


def ask(client: openai.OpenAI, model: str, **extra) -> str:
    raw = client.chat.completions.with_raw_response.create(model=model, messages=HELLO, max_tokens=1, **extra)
    body = raw.parse()
    assert body.system_fingerprint == raw.headers[VERSION]
    return raw.headers[VERSION]


def end_rollout(admin: httpx.Client, name: str) -> None:
    if admin.get(f"/models/{name}/rollouts/current").status_code == 200:
        admin.post(f"/models/{name}/rollouts/current/rollback")


def register_tiny_v2(admin: httpx.Client, tiny_model_dir) -> str:
    versions = admin.get("/models/tiny").json()["versions"]
    if len(versions) < 2:
        reply = admin.post("/models", json={"name": "tiny", "path": str(tiny_model_dir), "metadata": {"notes": "same files"}})
        assert reply.status_code == 201, reply.text
        assert reply.json()["version"] == "v2" and reply.json()["metadata"] == {"notes": "same files"}
    wait_loaded(admin, "tiny", "v2")
    return "v2"


def test_config_models_are_v1_on_production_and_every_answer_names_its_version(client, admin):
    listed = admin.get("/models/tiny").json()
    assert listed["aliases"] == {"production": "tiny@v1"}
    assert listed["versions"][0]["created_by"] == "config" and listed["versions"][0]["state"] == "ready"
    assert ask(client, "tiny") == "tiny@v1"
    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=2, stream=True)
    assert {c.system_fingerprint for c in stream} == {"tiny@v1"}
    assert [m.id for m in client.models.list().data] == ["remote", "tiny"]


def test_a_registered_version_loads_without_restart_and_answers_by_version_and_alias(client, admin, tiny_model_dir):
    register_tiny_v2(admin, tiny_model_dir)
    assert ask(client, "tiny@v2") == "tiny@v2"
    assert ask(client, "tiny") == "tiny@v1"  # production did not move
    assert admin.put("/models/tiny/aliases/staging", json={"version": "v2"}).status_code == 200
    assert ask(client, "tiny@staging") == "tiny@v2"
    assert client.models.retrieve("tiny@staging").id == "tiny@staging"
    history = admin.get("/models/tiny/history").json()["data"]
    assert [e["action"] for e in history if e["action"] in ("register", "alias")][:2] == ["register", "alias"]
    assert any(e["action"] == "alias" and e["after"] == {"alias": "staging", "version": "v2"} for e in history)
    at = admin.get("/models/tiny/history", params={"at": history[0]["at"]}).json()["aliases_at"]["aliases"]
    assert at == {"production": "v1"}


def test_a_canary_at_20_percent_sends_15_to_25_percent_to_the_candidate(client, admin, tiny_model_dir):
    register_tiny_v2(admin, tiny_model_dir)
    started = admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v2", "percent": 20,
                                                         "step_after_requests": 10_000})
    assert started.status_code == 201, started.text
    try:
        served = Counter(ask(client, "tiny") for _ in range(400))
        assert 0.15 <= served["tiny@v2"] / 400 <= 0.25, served
        assert set(served) == {"tiny@v1", "tiny@v2"}
        current = admin.get("/models/tiny/rollouts/current").json()
        assert current["figures"]["candidate"]["requests"] == served["tiny@v2"]
        assert ask(client, "tiny@v1") == "tiny@v1"  # an explicit version is never split
    finally:
        end_rollout(admin, "tiny")


def test_a_failing_remote_candidate_rolls_back_by_itself_with_no_client_error(client, admin, stubs):
    _, bad = stubs
    reply = admin.post("/models", json={"name": "remote", "kind": "remote", "base_url": bad.base_url, "upstream_model": "big"})
    assert reply.status_code == 201, reply.text
    wait_loaded(admin, "remote", reply.json()["version"])
    min_requests = 20
    start = admin.post("/models/remote/rollouts", json={
        "strategy": "canary", "candidate": reply.json()["version"], "percent": 50,
        "gates": {"min_requests": min_requests, "max_error_rate": 0.05},
    })
    assert start.status_code == 201, start.text
    answered = 0
    for _ in range(min_requests + 50):
        assert ask(client, "remote") == "remote@v1"  # the candidate's failures fell back, unseen
        answered += 1
        if admin.get("/models/remote/rollouts/current").status_code == 404:
            break
    last = admin.get("/models/remote/rollouts").json()["data"][-1]
    assert last["state"] == "rolled_back", last
    assert "error rate" in last["reason"] and last["figures"]["candidate"]["errors"] >= 1
    assert admin.get("/models/remote").json()["aliases"]["production"] == "remote@v1"
    assert answered <= min_requests + 50


def test_blue_green_switches_under_20_concurrent_clients_with_no_errors_and_rolls_back_at_once(client, admin, tiny_model_dir):
    register_tiny_v2(admin, tiny_model_dir)
    errors: list[Exception] = []
    seen: list[tuple[float, str]] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                seen.append((time.monotonic(), ask(client, "tiny")))
            except Exception as e:  # every error counts against the switch
                errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(20)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        started = admin.post("/models/tiny/rollouts", json={"strategy": "blue_green", "candidate": "v2", "warmup_requests": 2})
        assert started.status_code == 201, started.text
        deadline = time.monotonic() + 60
        while admin.get("/models/tiny/rollouts/current").json()["state"] != "switched":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        switched_at = time.monotonic()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    after_switch = [v for at, v in seen if at > switched_at + 0.2]
    assert after_switch and set(after_switch) == {"tiny@v2"}
    assert admin.get("/models/tiny").json()["aliases"]["production"] == "tiny@v2"
    back = admin.post("/models/tiny/rollouts/current/rollback")
    assert back.status_code == 200 and back.json()["state"] == "rolled_back"
    assert ask(client, "tiny") == "tiny@v1"


def test_bad_input_is_refused_with_the_right_status_and_field(client, admin, tiny_model_dir):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HELLO, max_tokens=1)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="tiny@v99", messages=HELLO, max_tokens=1)
    assert admin.get("/models/nope").status_code == 404
    assert admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v99"}).status_code == 404
    bad_gates = admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v2", "gates": {"max_error_rate": 2}})
    assert bad_gates.status_code == 400 and bad_gates.json()["error"]["param"] == "gates.max_error_rate"
    bad_steps = admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v1", "steps": [50, 10]})
    assert bad_steps.status_code == 400 and bad_steps.json()["error"]["param"] == "steps"
    private = admin.post("/models", json={"name": "evil", "kind": "remote", "base_url": "http://10.0.0.1/v1"})
    assert private.status_code == 400 and private.json()["error"]["param"] == "base_url"
    missing = admin.post("/models", json={"name": "broken", "path": "/does/not/exist"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "path"
    register_tiny_v2(admin, tiny_model_dir)
    assert admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v2"}).status_code == 201
    try:
        second = admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v2"})
        assert second.status_code == 409 and second.json()["error"]["code"] == "registry_conflict"
        retire = admin.delete("/models/tiny/versions/v2")
        assert retire.status_code == 409
    finally:
        end_rollout(admin, "tiny")
    assert admin.delete("/models/tiny/versions/v1").status_code == 409  # production points at it


def test_versions_aliases_history_and_rollouts_survive_a_restart(tmp_path, tiny_model_dir):
    config = dict(models=[{"name": "tiny", "path": str(tiny_model_dir)}])
    with running_server(tmp_path, tiny_model_dir, **config) as (url, _):
        with httpx.Client(base_url=f"{url}/v1/admin", timeout=30) as admin:
            assert admin.post("/models", json={"name": "tiny", "path": str(tiny_model_dir)}).status_code == 201
            wait_loaded(admin, "tiny", "v2")
            admin.put("/models/tiny/aliases/staging", json={"version": "v2"})
            admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v2", "percent": 30})
            before = admin.get("/models/tiny").json()
            history = admin.get("/models/tiny/history").json()["data"]
    with running_server(tmp_path, tiny_model_dir, **config) as (url, _):
        with httpx.Client(base_url=f"{url}/v1/admin", timeout=30) as admin:
            after = admin.get("/models/tiny").json()
            assert after["aliases"] == before["aliases"]
            assert [v["id"] for v in after["versions"]] == ["tiny@v1", "tiny@v2"]
            assert after["rollout"]["id"] == before["rollout"]["id"] and after["rollout"]["percent"] == 30
            assert admin.get("/models/tiny/history").json()["data"][: len(history)] == history


def test_a_shadow_rollout_mirrors_about_percent_of_requests_and_clients_see_only_the_stable_version(client, admin):
    with running_stub(Behaviour(chunks=2)) as shadow:
        reply = admin.post("/models", json={"name": "remote", "kind": "remote", "base_url": shadow.base_url, "upstream_model": "big"})
        assert reply.status_code == 201, reply.text
        wait_loaded(admin, "remote", reply.json()["version"])
        start = admin.post("/models/remote/rollouts", json={"strategy": "shadow", "candidate": reply.json()["version"], "percent": 30})
        assert start.status_code == 201, start.text
        try:
            seen = Counter(ask(client, "remote") for _ in range(200))
            assert seen == Counter({"remote@v1": 200})
            deadline = time.monotonic() + 30
            while (pairs := admin.get("/models/remote/rollouts/current").json().get("figures", admin.get("/models/remote/rollouts").json()["data"][-1])) is None or pairs.get("shadow", {}).get("pairs", 0) < len(shadow.requests):
                assert time.monotonic() < deadline
                time.sleep(0.05)
            # About 30% of 200 (each request's arm is a hash of its id): 60 ± 5 standard deviations (6.5).
            assert 28 <= len(shadow.requests) <= 92, len(shadow.requests)
            figures = admin.get("/models/remote/rollouts/current").json()["figures"]
            assert figures["shadow"]["pairs"] == len(shadow.requests) and figures["shadow"]["candidate_errors"] == 0
            assert figures["candidate"]["requests"] == len(shadow.requests) and figures["stable"]["requests"] == 200
            assert figures["shadow"]["mean_candidate_chars"] > 0
        finally:
            end_rollout(admin, "remote")


def test_a_version_is_retired_only_when_idle_and_then_unloaded(client, admin, tiny_model_dir):
    reply = admin.post("/models", json={"name": "tiny", "path": str(tiny_model_dir)})
    assert reply.status_code == 201, reply.text
    version = reply.json()["version"]
    wait_loaded(admin, "tiny", version)
    long = threading.Thread(target=lambda: client.chat.completions.create(
        model=f"tiny@{version}", messages=HELLO, max_tokens=900, extra_body={"ignore_eos": True}))
    long.start()
    try:
        deadline = time.monotonic() + 30

        def running() -> int:  # the version's rows its worker holds (a request merely in flight may not be queued yet)
            workers = admin.get("/workers").json()["data"]
            return sum(s["occupancy"] for w in workers for s in w["models"] if s["model"] == f"tiny@{version}")

        while running() < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        busy = admin.delete(f"/models/tiny/versions/{version}")
        assert busy.status_code == 409 and "waiting or running" in busy.json()["error"]["message"]
    finally:
        long.join(120)
    retired = admin.delete(f"/models/tiny/versions/{version}")
    assert retired.status_code == 200 and retired.json()["state"] == "retired"
    deadline = time.monotonic() + 10
    while admin.get(f"/models/tiny/versions/{version}").json()["loaded_here"]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=f"tiny@{version}", messages=HELLO, max_tokens=1)


def test_a_candidate_users_rate_poorly_is_rolled_back_by_the_feedback_gate(client, admin, served, tiny_model_dir):
    register_tiny_v2(admin, tiny_model_dir)
    end_rollout(admin, "tiny")
    started = admin.post("/models/tiny/rollouts", json={"strategy": "canary", "candidate": "v2", "percent": 50,
                                                         "gates": {"min_feedback_score": 0.5, "min_feedback": 4,
                                                                   "min_requests": 1000}})
    assert started.status_code == 201, started.text
    try:
        rated = 0
        with httpx.Client(base_url=served[0], timeout=30) as http:
            for _ in range(200):
                answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=1)
                good = answer.system_fingerprint == "tiny@v1"  # users like the stable version, not the candidate
                assert http.post("/v1/feedback", json={"response_id": answer.id, "rating": 1 if good else -1}).status_code == 200
                rated += not good
                if admin.get("/models/tiny/rollouts/current").status_code == 404:
                    break
        assert rated >= 4
        [last] = [r for r in admin.get("/models/tiny/rollouts").json()["data"] if r["id"] == started.json()["id"]]
        assert last["state"] == "rolled_back" and "below min_feedback_score 0.5" in last["reason"], last
        assert admin.get("/models/tiny").json()["aliases"]["production"] == "tiny@v1"
    finally:
        end_rollout(admin, "tiny")
