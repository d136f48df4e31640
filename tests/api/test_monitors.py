"""Quality and drift monitors on a real server: prompts go through the chat API, the served
embedding model (all-MiniLM-L6-v2) embeds the sampled ones off the request path, and the MMD
test says whether what users ask has moved. One topic, then a block about a very different one:
the alert fires; the same topic throughout: it does not."""

from __future__ import annotations

import random
import time

import httpx
import numpy as np
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from genloom.runtimes.embeddings import builtin_embedding_model_path
from genloom.telemetry.monitors import distinct_2, mmd_test
from tests.api.conftest import running_server

COOKING = (
    ["How long should I {verb} {food}?", "What spices go well with {food}?", "Can I {verb} {food} the day before?",
     "Why does my {food} turn out dry when I {verb} it?", "What is the best pan to {verb} {food} in?",
     "How do I know when {food} is done if I {verb} it?", "Give me a quick recipe to {verb} {food} for dinner."],
    {"verb": ["roast", "bake", "grill", "fry", "braise", "steam"],
     "food": ["chicken thighs", "salmon", "potatoes", "a pork shoulder", "carrots", "tofu", "lamb chops", "mushrooms"]},
)
ASTRONOMY = (
    ["How far is {body} from {other}?", "What is the surface of {body} made of?", "Could a probe land on {body}?",
     "How was {body} formed according to {theory}?", "Why does {body} look red through {instrument}?",
     "What would {instrument} show us about {body}?", "Explain {theory} using {body} as the example."],
    {"body": ["Mars", "the Andromeda galaxy", "a neutron star", "Jupiter's moon Europa", "the Crab nebula", "Saturn's rings"],
     "other": ["the Sun", "Earth", "the Milky Way's centre"],
     "theory": ["general relativity", "the nebular hypothesis", "stellar nucleosynthesis"],
     "instrument": ["a radio telescope", "the James Webb telescope", "an amateur refractor"]},
)


def prompts(topic, count: int, rng: random.Random) -> list[str]:
    templates, slots = topic
    out = []
    for _ in range(count):
        template = rng.choice(templates)
        out.append(template.format(**{k: rng.choice(v) for k, v in slots.items()}))
    return out


def monitor_config(tmp_path):
    return {
        "models": [{"name": "tiny", "path": None}, {"name": "all-minilm-l6-v2", "kind": "embedding", "path": str(builtin_embedding_model_path())}],
        "monitors": {"sample_rate": 1.0, "reference_n": 40, "window_n": 40, "min_n": 40, "interval_s": 0.2, "permutations": 300},
        "cache": {"enabled": False},
    }


def ask(client: openai.OpenAI, texts: list[str]) -> None:
    for text in texts:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], max_tokens=2)


def settled_report(base: str, current_n: int, timeout_s: float = 60) -> dict:
    """The monitor's report once the current window holds `current_n` prompts and was tested."""
    deadline = time.monotonic() + timeout_s
    while True:
        report = httpx.get(f"{base}/v1/admin/monitors/tiny").json()
        drift = report["drift"]
        if drift["current_n"] >= current_n and drift["p_value"] is not None:
            return report
        assert time.monotonic() < deadline, report
        time.sleep(0.2)


@pytest.mark.parametrize(("second", "alert"), [(ASTRONOMY, True), (COOKING, False)], ids=["topic-change", "same-topic"])
def test_drift_alerts_when_the_topic_changes_and_not_when_it_stays(tmp_path, tiny_model_dir, second, alert):
    config = monitor_config(tmp_path)
    config["models"][0]["path"] = str(tiny_model_dir)
    rng = random.Random(7)
    with running_server(tmp_path, tiny_model_dir, **config) as (base, _):
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        ask(client, prompts(COOKING, 40, rng))  # the reference
        ask(client, prompts(second, 40, rng))
        report = settled_report(base, 40)
        drift = report["drift"]
        assert drift["reference_n"] == 40 and drift["threshold"] == 0.01
        assert drift["alert"] is alert, drift
        if alert:
            assert drift["p_value"] < 0.01
        else:
            assert drift["p_value"] > 0.05
        quality = report["quality"]["tiny@v1"]
        assert quality["n"] == 80 and quality["error_rate"] == 0.0 and quality["finish_reasons"]
        metrics = {s.labels.get("model"): s.value for f in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
                   if f.name == "genloom_drift_alert" for s in f.samples}
        assert metrics == {"tiny": float(alert)}
        # A new reference from the current window: what users ask now is the new normal.
        pinned = httpx.post(f"{base}/v1/admin/monitors/tiny/reference", json={"from": "current"}).json()
        assert pinned["drift"]["reference_n"] == 40 and pinned["drift"]["current_n"] == 0 and not pinned["drift"]["alert"]


def test_the_monitor_endpoints_refuse_what_they_do_not_know(tmp_path, tiny_model_dir):
    with running_server(tmp_path, tiny_model_dir, monitors={"enabled": False}) as (base, _):
        answer = httpx.get(f"{base}/v1/admin/monitors/tiny")
        assert answer.status_code == 400 and "monitors are off" in answer.json()["error"]["message"]
    with running_server(tmp_path, tiny_model_dir) as (base, _):
        answer = httpx.get(f"{base}/v1/admin/monitors/nope")
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "model_not_found"
        bad = httpx.post(f"{base}/v1/admin/monitors/tiny/reference", json={"from": "yesterday"})
        assert bad.status_code == 400
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        ask(client, ["hello there"])
        report = httpx.get(f"{base}/v1/admin/monitors/tiny").json()
        assert report["drift"] is None  # no embedding model served: quality only
        assert report["quality"]["tiny@v1"]["n"] == 1


def test_the_mmd_test_tells_shifted_samples_from_alike_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    shifted = rng.normal(loc=0.8, size=(60, 8))
    _, p_alike = mmd_test(a, b, permutations=200, rng=rng)
    score, p_shift = mmd_test(a, shifted, permutations=200, rng=rng)
    assert p_alike > 0.05 and p_shift < 0.01 and score > 0


def test_distinct_2_measures_repetition():
    assert distinct_2("the cat sat on the mat") == 1.0
    assert distinct_2("go go go go go") == 0.25
    assert distinct_2("one") is None
