"""Fine-tuned versions in their base's batch, through `genloom serve`'s HTTP API and the official
client: two LoRA-adapter versions of a base are served by the base's worker (one copy of the
weights, one batch), concurrent requests to all three get each version's own greedy answer, and a
limit on attached adapters detaches the least recently used idle one and attaches it again when
work for it comes. With `runtime.batch_adapters: false` each version runs a merged copy, which
gives the reference answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from genloom.worker import TextWorker
from genloom.worker.adapter_worker import AdapterWorker
from tests.api.conftest import running_server
from tests.runtimes.test_multi_lora import train

VERSIONS = ("tiny", "tiny-ahoy", "tiny-howdy")
QUESTIONS = [f"question {i}" for i in range(4)]


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"tiny-ahoy": train(tiny_model_dir, root / "a", "Ahoy", 1), "tiny-howdy": train(tiny_model_dir, root / "b", "Howdy", 2)}


@pytest.fixture(scope="module")
def dora(tiny_model_dir, tmp_path_factory) -> Path:
    """A DoRA adapter: not plain LoRA, so it must be served on a merged copy, not in the batch."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, use_dora=True, init_lora_weights=False, target_modules=["q_proj", "v_proj"]))
    out = tmp_path_factory.mktemp("dora") / "adapter"
    model.save_pretrained(out)
    return out


def models(tiny_model_dir: Path, adapters: dict[str, Path]) -> list[dict]:
    return [{"name": "tiny", "path": str(tiny_model_dir)}] + [
        {"name": name, "path": str(tiny_model_dir), "adapter": str(path)} for name, path in adapters.items()
    ]


def with_dora(tiny_model_dir: Path, adapters: dict[str, Path], dora: Path) -> list[dict]:
    return models(tiny_model_dir, adapters) + [{"name": "tiny-dora", "path": str(tiny_model_dir), "adapter": str(dora)}]


def ask(base_url: str, model: str, question: str) -> str:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(model=model, temperature=0, max_tokens=8,
                                         messages=[{"role": "user", "content": question}])
    assert out.system_fingerprint == f"{model}@v1"
    return out.choices[0].message.content


def answers(base_url: str, versions: tuple[str, ...] = VERSIONS) -> dict[tuple[str, str], str]:
    """Every version's answer to every question, all asked at once."""
    pairs = [(m, q) for q in QUESTIONS for m in versions]
    with ThreadPoolExecutor(len(pairs)) as pool:
        return dict(zip(pairs, pool.map(lambda p: ask(base_url, *p), pairs)))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, adapters, dora) -> dict[tuple[str, str], str]:
    """Each version on a merged copy of its own (the way it ran before adapters were batched)."""
    with running_server(tmp_path_factory.mktemp("merged"), tiny_model_dir, models=with_dora(tiny_model_dir, adapters, dora),
                        runtime={"batch_adapters": False}) as (base_url, server):
        assert all(isinstance(w, TextWorker) for w in server.workers) and len(server.workers) == 4
        return answers(base_url, (*VERSIONS, "tiny-dora"))


def test_adapter_versions_run_in_the_base_batch_and_answer_as_merged_copies(tmp_path_factory, tiny_model_dir, adapters,
                                                                          dora, reference):
    with running_server(tmp_path_factory.mktemp("batched"), tiny_model_dir, models=with_dora(tiny_model_dir, adapters, dora),
                        runtime={"max_batch_size": 16}) as (base_url, server):
        own = sorted(w.model for w in server.workers if isinstance(w, TextWorker))
        assert own == ["tiny-dora@v1", "tiny@v1"]  # the base, and DoRA on a merged copy: not plain LoRA
        [base] = [w for w in server.workers if isinstance(w, TextWorker) and w.model == "tiny@v1"]
        assert base.adapters == ("tiny-ahoy@v1", "tiny-howdy@v1")
        got = answers(base_url, (*VERSIONS, "tiny-dora"))
        workers = httpx.get(f"{base_url}/v1/admin/workers").json()["data"]
        slots = {s["model"]: s for w in workers for s in w["models"]}
    assert got == reference
    for version in VERSIONS[1:]:  # each tuned version answers unlike the base, to every question
        assert all(reference[(version, q)] != reference[("tiny", q)] for q in QUESTIONS)
    assert slots["tiny-ahoy@v1"]["batch_of"] == "tiny@v1" and slots["tiny@v1"]["batch_of"] is None
    assert slots["tiny-howdy@v1"]["capacity"] == 16


def test_a_limit_on_attached_adapters_swaps_them_by_demand(tmp_path_factory, tiny_model_dir, adapters, reference):
    """`max_loaded_adapters: 1`: an adapter attaches when its work comes, detaching the idle one."""
    with running_server(tmp_path_factory.mktemp("limited"), tiny_model_dir, models=models(tiny_model_dir, adapters),
                        runtime={"max_loaded_adapters": 1}) as (base_url, server):
        def attached() -> list[str]:
            return [w.model for w in server.workers if isinstance(w, AdapterWorker)]

        assert len(attached()) == 1  # the second found no room at start and waits for work
        # A new question each time: a repeated one would be answered from the response cache.
        for question, version in zip(QUESTIONS, ["tiny-howdy", "tiny-ahoy"] * 2):
            assert ask(base_url, version, question) == reference[(version, question)]
            assert attached() == [f"{version}@v1"]
        assert ask(base_url, "tiny", QUESTIONS[1]) == reference[("tiny", QUESTIONS[1])]
