"""A fine-tuning job through a real `genloom serve`, SIGKILLed after its first checkpoints and
started again on the same data: the job resumes from its last checkpoint (not from step 0),
finishes, and its `ft:` model serves the learned style."""

from __future__ import annotations

import io
import json
import signal
import time

import openai
import yaml

from tests.e2e.test_scale_out import ADMIN_KEY, process


def rows(n: int) -> bytes:
    return "\n".join(json.dumps({"messages": [{"role": "user", "content": f"question number {i} about ships"},
                                              {"role": "assistant", "content": f"Ahoy! {i} Arr."}]})
                     for i in range(n)).encode()


def test_a_fine_tuning_job_survives_a_sigkill_and_resumes_from_its_checkpoint(tmp_path, tiny_model_dir):
    config = {"builtin_models": False, "models": [{"name": "tiny", "path": str(tiny_model_dir)}],
              "fine_tuning": {"checkpoint_every": 5, "lease_s": 3, "poll_s": 0.2, "base_learning_rate": 5e-3}}
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    env = {"GENLOOM_DATA_DIR": str(tmp_path / "data"), "GENLOOM_ADMIN_KEY": ADMIN_KEY}
    args = ["serve", "--config", str(tmp_path / "genloom.yaml")]
    with process(tmp_path, "serve-1", args, env) as (base, first):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        training = client.files.create(file=("t.jsonl", io.BytesIO(rows(16))), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="tiny", training_file=training.id, suffix="sea", seed=3,
                                             method={"type": "supervised", "supervised": {"hyperparameters": {
                                                 "n_epochs": 40, "batch_size": 4}}})
        deadline = time.monotonic() + 120
        while not [c for c in client.fine_tuning.jobs.checkpoints.list(job.id).data if c.step_number >= 10]:
            assert time.monotonic() < deadline, client.fine_tuning.jobs.retrieve(job.id).status
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    with process(tmp_path, "serve-2", args, env) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=60)
        deadline = time.monotonic() + 300
        while (done := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, done.status
            time.sleep(0.2)
        assert done.status == "succeeded", done.error
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000).data]
        resumed = [m for m in messages if m.startswith("resuming from the checkpoint at step")]
        assert len(resumed) == 1 and int(resumed[0].rsplit(" ", 1)[1]) >= 10
        assert done.model_extra["result"]["steps"] == 160 and done.model_extra["result"]["resumed_from"] >= 10
        deadline = time.monotonic() + 60
        while True:
            try:
                out = client.chat.completions.create(model=done.fine_tuned_model, temperature=0, max_tokens=8,
                                                     messages=[{"role": "user", "content": "question number 5 about ships"}])
                break
            except openai.APIStatusError as e:
                assert e.status_code == 503 and time.monotonic() < deadline
                time.sleep(0.2)
        assert out.choices[0].message.content.startswith("Ahoy!")
