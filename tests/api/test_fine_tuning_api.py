"""OpenAI's fine-tuning API through the official client, on a tiny random model: a job trains a
LoRA adapter on an uploaded file, reports events and checkpoints, and its `ft:` model answers in
the learned style while the base does not; a dataset version trains too; bad jobs are refused by
field; a job is cancelled; another tenant's jobs are not found."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.api.conftest import running_server
from tests.api.test_auth import ADMIN_KEY, new_tenant

STYLE = "Ahoy! {w} Arr."


def rows(n: int, start: int = 0) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"question number {i} about ships"},
                          {"role": "assistant", "content": STYLE.format(w=i)}]} for i in range(start, start + n)]


def jsonl(lines: list[dict]) -> bytes:
    return "\n".join(json.dumps(x) for x in lines).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, object]]:
    tuning = {"checkpoint_every": 4, "poll_s": 0.1, "base_learning_rate": 5e-3, "lease_s": 20}
    with running_server(tmp_path_factory.mktemp("fine-tuning"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY,
                        fine_tuning=tuning) as s:
        yield s


@pytest.fixture(scope="module")
def tenant(served) -> tuple[openai.OpenAI, httpx.Client]:
    base = served[0]
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        _, key = new_tenant(admin, "tuner")
    return (openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0),
            httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=30))


def finished(client: openai.OpenAI, job_id: str, timeout_s: float = 240) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job stayed {job.status}"
        time.sleep(0.2)


def answer(client: openai.OpenAI, model: str, timeout_s: float = 60) -> str:
    """The model's greedy answer, once its version has loaded (a new version answers 503 until then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out = client.chat.completions.create(model=model, temperature=0, max_tokens=6,
                                                 messages=[{"role": "user", "content": "question number 99 about ships"}])
            return out.choices[0].message.content
        except openai.APIStatusError as e:
            assert e.status_code == 503 and time.monotonic() < deadline, e
            time.sleep(0.2)


def test_a_job_trains_an_adapter_that_answers_in_the_learned_style(tenant, served):
    client, _ = tenant
    training = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(rows(16)))), purpose="fine-tune")
    validation = client.files.create(file=("valid.jsonl", io.BytesIO(jsonl(rows(4, 100)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=training.id, validation_file=validation.id, suffix="pirate", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 10, "batch_size": 4}}},
        extra_body={"lora": {"r": 4, "alpha": 8}},
    )
    assert job.status == "queued" and job.model == "tiny" and job.hyperparameters.n_epochs == 10
    done = finished(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model == f"ft:tiny:pirate:{job.id.removeprefix('ftjob-')[:8]}"
    result = done.model_extra["result"]
    assert result["steps"] == 40 and result["eval_loss"] < 0.8 * result["base_eval_loss"]  # the bar: 20% below the base
    assert done.trained_tokens > 0 and result["version"] == "tiny@v2"
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and {"step", "train_loss", "total_steps", "eta_s"} <= set(metrics[0].data)
    assert "registered as tiny@v2" in events[0].message
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data]
    assert steps == [40, 36, 32, 28, 24, 20, 16, 12, 8, 4]
    assert answer(client, done.fine_tuned_model).startswith("Ahoy!")
    assert not answer(client, "tiny@v1").startswith("Ahoy!")  # the base is unchanged
    evaluation = result["evaluation"]
    assert evaluation["passed"] and evaluation["state"] == "passed" and evaluation["probes"] == 12
    assert evaluation["eval_perplexity"] < evaluation["base_eval_perplexity"]
    # A tenant's job: the version serves that tenant only, and no canary sends anyone else's traffic to it.
    assert result["rollout"] is None and "tiny@v2 serves this tenant only" in " ".join(e.message for e in events)
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        assert admin.get("/v1/admin/models/tiny/rollouts/current").status_code == 404
        version = admin.get("/v1/admin/models/tiny/versions/v2").json()
        slots = {s["model"]: s for w in admin.get("/v1/admin/workers").json()["data"] for s in w["models"]}
        _, other_key = new_tenant(admin, "neighbour")
    assert version["metadata"]["fine_tuning_job"] == job.id and version["metadata"]["evaluation"]["passed"]
    assert version["metadata"]["owner_tenant"] == done.organization_id
    assert len(version["source"]["adapter_blob"]) == 64  # on the blob store: every process serving it fetches it
    assert slots["tiny@v2"]["batch_of"] == "tiny@v1"  # served in the base's batch, not on a merged copy
    neighbour = openai.OpenAI(base_url=f"{served[0]}/v1", api_key=other_key, max_retries=0)
    listed = {m.id: m for m in client.models.list().data}  # listed under its OpenAI name, for its tenant only
    assert listed[done.fine_tuned_model].model_extra["parent"] == "tiny@v1"
    assert listed[done.fine_tuned_model].owned_by == done.organization_id
    assert done.fine_tuned_model not in {m.id for m in neighbour.models.list().data}
    with pytest.raises(openai.NotFoundError):
        neighbour.models.retrieve(done.fine_tuned_model)
    for name in (done.fine_tuned_model, "tiny@v2"):
        with pytest.raises(openai.NotFoundError):
            neighbour.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert neighbour.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                             max_tokens=2).system_fingerprint == "tiny@v1"


def test_events_stream_as_server_sent_events_until_the_job_ends(tenant):
    client, http = tenant
    [job] = [j for j in client.fine_tuning.jobs.list(limit=100).data if j.status == "succeeded"][:1]
    with http.stream("GET", f"/v1/fine_tuning/jobs/{job.id}/events", params={"stream": "true"}) as r:
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0].removeprefix("data: "))
    assert first["object"] == "fine_tuning.job.event" and first["message"].startswith("created: 16 training examples")


def test_a_dataset_version_is_a_training_file(tenant, served):
    client, http = tenant
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        upload = admin.post("/v1/files", data={"purpose": "fine-tune"}, files={"file": ("d.jsonl", jsonl(rows(10, 200)))})
        built = admin.post("/v1/admin/datasets", json={"name": "ships", "source": {"type": "file", "file_id": upload.json()["id"]},
                                                       "settings": {"eval_fraction": 0.2, "near_duplicate_threshold": 1.0}})
        assert built.status_code == 201, built.text
        job = admin.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": "ships@v1", "hyperparameters": {"n_epochs": 1}})
    assert job.status_code == 200, job.text
    body = job.json()
    assert body["lineage"]["dataset"] == "ships@v1" and body["lineage"]["training_rows"] == built.json()["manifest"]["counts"]["train"]
    # A tenant cannot train on a dataset that is not its own.
    refused = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": "ships@v1"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "training_file"


@pytest.mark.parametrize(("change", "status", "param"), [
    ({"model": "nothing"}, 404, "model"),
    ({"training_file": "file-0000"}, 400, "training_file"),
    ({"suffix": "has spaces"}, 400, "suffix"),
    ({"method": {"type": "dpo"}}, 400, "method.type"),
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}}, 400,
     "method.supervised.hyperparameters.n_epochs"),
    ({"hyperparameters": {"batch_size": "lots"}}, 400, "hyperparameters.batch_size"),
    ({"hyperparameters": {"warmup": 3}}, 400, "hyperparameters.warmup"),
    ({"lora": {"r": 0}}, 400, "lora.r"),
    ({"lora": {"target_modules": "q_proj"}}, 400, "lora.target_modules"),
    ({"seed": -1}, 400, "seed"),
])
def test_bad_jobs_are_refused_by_field(tenant, change, status, param):
    client, http = tenant
    training = client.files.create(file=("ok.jsonl", io.BytesIO(jsonl(rows(2)))), purpose="fine-tune")
    r = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": training.id} | change)
    assert r.status_code == status, r.text
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize(("content", "needle"), [
    (b"{not json", "line 1: not JSON"),
    (jsonl([{"messages": [{"role": "user", "content": "hi"}]}]), "line 1: needs a 'messages' list of at least two"),
    (jsonl(rows(1) + [{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}]),
     "line 2: must end with an assistant message"),
])
def test_a_training_file_that_is_not_chat_format_names_its_line(tenant, content, needle):
    client, http = tenant
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(content)), purpose="fine-tune")
    r = http.post("/v1/fine_tuning/jobs", json={"model": "tiny", "training_file": bad.id})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]


def test_a_job_is_cancelled_and_another_tenant_cannot_see_it(tenant, served):
    client, http = tenant
    training = client.files.create(file=("long.jsonl", io.BytesIO(jsonl(rows(16)))), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id,
                                         method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50}}})
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        _, other_key = new_tenant(admin, "snoop")
    other = httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {other_key}"}, timeout=30)
    for method, path in (("GET", ""), ("POST", "/cancel"), ("GET", "/events"), ("GET", "/checkpoints")):
        r = other.request(method, f"/v1/fine_tuning/jobs/{job.id}{path}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "fine_tuning_job_not_found", (method, path)
    client.fine_tuning.jobs.cancel(job.id)
    done = finished(client, job.id, timeout_s=60)
    assert done.status == "cancelled"
    again = http.post(f"/v1/fine_tuning/jobs/{job.id}/cancel")
    assert again.status_code == 409


def test_a_tenant_may_have_only_so_many_jobs_waiting_or_running(served):
    with httpx.Client(base_url=served[0], headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=30) as admin:
        _, key = new_tenant(admin, "eager")
    client = openai.OpenAI(base_url=f"{served[0]}/v1", api_key=key, max_retries=0)
    training = client.files.create(file=("many.jsonl", io.BytesIO(jsonl(rows(16)))), purpose="fine-tune")
    long = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50}}}
    jobs = [client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=long) for _ in range(4)]
    try:
        with pytest.raises(openai.RateLimitError) as refused:
            client.fine_tuning.jobs.create(model="tiny", training_file=training.id, method=long)
        assert refused.value.code == "tenant_queue_full"
    finally:
        for job in jobs:
            client.fine_tuning.jobs.cancel(job.id)
