"""The learning loop end to end on a real `genloom serve` (a tiny random model, so it runs in a
minute or two on 2 CPUs): 200 prompts answered; every answer rated, with a correction in a
distinctive style; a dataset built from the ratings (Parquet, manifest, lineage back to the
request ids); a fine-tuning job on it, SIGKILLed after its first checkpoints and resumed; the
evaluation gate passes, a canary starts by itself and is promoted by its gates; the tuned
version's eval loss is far below the base's and its answers show the style where the base's do
not."""

from __future__ import annotations

import json
import signal
import time

import httpx
import openai
import pyarrow.parquet as pq
import yaml

from tests.e2e.test_scale_out import ADMIN_KEY, process

TOPICS = ["ships", "tides", "maps", "ropes", "sails", "storms", "islands", "anchors", "parrots", "lanterns"]


def style(i: int) -> str:
    return f"Ahoy! {TOPICS[i % 10]} be fine, matey."


def wait(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return found


def test_feedback_to_dataset_to_fine_tune_to_canary_to_promotion(tmp_path, tiny_model_dir):
    config = {
        "builtin_models": False, "models": [{"name": "tiny", "path": str(tiny_model_dir)}], "cache": {"enabled": False},
        "fine_tuning": {"checkpoint_every": 5, "lease_s": 3, "poll_s": 0.2, "base_learning_rate": 5e-3,
                        "canary_percent": 50, "canary_step_requests": 40},
    }
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    env = {"GENLOOM_DATA_DIR": str(tmp_path / "data"), "GENLOOM_ADMIN_KEY": ADMIN_KEY}
    args = ["serve", "--config", str(tmp_path / "genloom.yaml")]
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with process(tmp_path, "serve-1", args, env) as (base, first):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        http = httpx.Client(base_url=base, headers=headers, timeout=60)
        ids = []
        for i in range(200):  # 200 prompts answered by the base
            answer = client.chat.completions.create(
                model="tiny", max_tokens=6, user=f"user-{i % 7}",
                messages=[{"role": "user", "content": f"Tell me about {TOPICS[i % 10]}, question {i}."}])
            ids.append(answer.id)
            rated = http.post("/v1/feedback", json={"response_id": answer.id, "rating": 5, "scale": "stars",
                                                    "correction": style(i)})
            assert rated.status_code == 200, rated.text
        built = http.post("/v1/admin/datasets", json={
            "name": "pirate", "source": {"type": "feedback", "model": "tiny"},
            "settings": {"eval_fraction": 0.1, "seed": 2, "near_duplicate_threshold": 0.95},
            "metric": {"type": "pattern", "pattern": "^Ahoy!"}})
        assert built.status_code == 201, built.text
        manifest = built.json()["manifest"]
        assert manifest["counts"]["read"] == 200 and manifest["counts"]["eval"] >= 5
        job = client.fine_tuning.jobs.create(model="tiny", training_file="pirate@v1", suffix="pirate", seed=5,
                                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                                 "n_epochs": 6, "batch_size": 8}}})
        wait(lambda: [c for c in client.fine_tuning.jobs.checkpoints.list(job.id).data if c.step_number >= 10], 120,
             "a checkpoint at step 10")
        first.send_signal(signal.SIGKILL)  # mid-way through training
        first.wait(10)
    with process(tmp_path, "serve-2", args, env) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        http = httpx.Client(base_url=base, headers=headers, timeout=60)
        done = wait(lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in ("succeeded", "failed") and j, 300,
                    "the job to end")
        assert done.status == "succeeded", done.error
        result = done.model_extra["result"]
        assert result["resumed_from"] >= 10  # it resumed from a checkpoint, not from step 0
        evaluation = result["evaluation"]
        assert evaluation["passed"], evaluation["reasons"]
        assert result["eval_loss"] <= 0.8 * result["base_eval_loss"]  # at least 20% below the base on the style
        assert evaluation["metric"] == "pattern" and evaluation["metric_score"] > evaluation["base_metric_score"]
        assert result["rollout"], "a canary should have started by itself"
        # Traffic on the plain name: half goes to the candidate until its gates promote it.
        for i in range(400):
            client.chat.completions.create(model="tiny", max_tokens=4, messages=[{"role": "user", "content": f"hello {i}"}])
            model = http.get("/v1/admin/models/tiny").json()
            if model["aliases"]["production"] == "tiny@v2":
                break
        assert model["aliases"]["production"] == "tiny@v2", model["rollout"]
        # The tuned version answers in the style; the base never did.
        prompt = [{"role": "user", "content": "Tell me about parrots, question 999."}]
        tuned = client.chat.completions.create(model="tiny", messages=prompt, max_tokens=8, temperature=0)
        old = client.chat.completions.create(model="tiny@v1", messages=prompt, max_tokens=8, temperature=0)
        assert tuned.choices[0].message.content.startswith("Ahoy!") and tuned.system_fingerprint == "tiny@v2"
        assert not old.choices[0].message.content.startswith("Ahoy!")
        # The version records where it came from: the job, the dataset version and its hash.
        version = http.get("/v1/admin/models/tiny/versions/v2").json()
        assert version["metadata"]["lineage"]["dataset"] == "pirate@v1"
        assert version["metadata"]["lineage"]["dataset_sha256"] == built.json()["sha256"]
    # The dataset's rows trace back to the answered requests.
    blob = tmp_path / "data" / "blobs" / manifest["files"]["parquet"][:2] / manifest["files"]["parquet"][2:4] / manifest["files"]["parquet"]
    lineage = [json.loads(r["lineage"]) for r in pq.read_table(blob).to_pylist()]
    assert {row["request_id"] for row in lineage} <= set(ids) and len(lineage) == manifest["rows"]
