"""A batch of 500 lines (25 malformed) through a real `genloom serve`, SIGKILLed while its jobs
run and started again on the same data: the batch finishes with all 500 lines across its output
and error files, each custom_id once, read back with the official client."""

from __future__ import annotations

import json
import signal
import time

import openai
import yaml

from tests.e2e.test_scale_out import ADMIN_KEY, process


def test_500_lines_survive_a_sigkill_and_every_line_is_accounted_for(tmp_path, tiny_model_dir):
    config = {"builtin_models": False, "models": [{"name": "tiny", "path": str(tiny_model_dir)}], "cache": {"enabled": False},
              "runtime": {"max_batch_size": 8}, "jobs": {"lease_s": 3, "heartbeat_s": 0.5, "sweep_s": 1}}
    (tmp_path / "genloom.yaml").write_text(yaml.safe_dump(config))
    env = {"GENLOOM_DATA_DIR": str(tmp_path / "data"), "GENLOOM_ADMIN_KEY": ADMIN_KEY}
    args = ["serve", "--config", str(tmp_path / "genloom.yaml")]
    lines = []
    for i in range(500):
        if i % 20 == 7:
            lines.append("{broken" if i % 40 == 7 else json.dumps({"custom_id": f"c{i}", "url": "/v1/chat/completions",
                                                                  "method": "POST", "body": {"model": "tiny"}}))
        else:
            lines.append(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": {
                "model": "tiny", "messages": [{"role": "user", "content": f"line {i}"}], "max_tokens": 12, "ignore_eos": True}}))
    with process(tmp_path, "serve-1", args, env) as (base, first):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=120)
        upload = client.files.create(file=("big.jsonl", "\n".join(lines).encode()), purpose="batch")
        batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
        assert batch.request_counts.total == 500 and batch.request_counts.failed == 25
        deadline = time.monotonic() + 120
        while client.batches.retrieve(batch.id).request_counts.completed < 50:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    with process(tmp_path, "serve-2", args, env) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=ADMIN_KEY, max_retries=0, timeout=120)
        deadline = time.monotonic() + 240
        while (done := client.batches.retrieve(batch.id)).status != "completed":
            assert time.monotonic() < deadline, done.request_counts
            time.sleep(0.5)
        outputs = [json.loads(x) for x in client.files.content(done.output_file_id).read().decode().splitlines()]
        errors = [json.loads(x) for x in client.files.content(done.error_file_id).read().decode().splitlines()]
    assert len(outputs) == 475 and len(errors) == 25
    assert (done.request_counts.completed, done.request_counts.failed) == (475, 25)
    named = [o["custom_id"] for o in outputs] + [e["custom_id"] for e in errors if e["custom_id"]]
    assert len(named) == len(set(named)) and len(named) == 500 - 13  # 13 broken lines have no readable custom_id
    assert all(o["response"]["body"]["usage"]["completion_tokens"] == 12 for o in outputs)
