"""Several LoRA adapters in one forward pass: each row's logits equal what its own adapter merged
into the base gives for that row alone, and base rows equal the base's; greedy decoding of a
mixed batch matches each request run alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genloom.runtimes.lora import LoraSettings, LoraTrainer, TrainSettings, merged_model
from genloom.runtimes.multi_lora import LoraWeights, MultiLora


def train(tiny_model_dir: Path, out: Path, word: str, seed: int) -> Path:
    rows = [[{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": f"{word}! {i}"}] for i in range(8)]
    settings = TrainSettings(n_epochs=6, batch_size=4, learning_rate=5e-3, checkpoint_every=100, seed=seed)
    return LoraTrainer(base_path=tiny_model_dir, out_dir=out, lora=LoraSettings(r=4, alpha=8), train=settings).run(rows, []).adapter_dir


@pytest.fixture(scope="module")
def adapters(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {"ahoy": train(tiny_model_dir, root / "a", "Ahoy", 1), "howdy": train(tiny_model_dir, root / "b", "Howdy", 2)}


def base_model(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@torch.no_grad()
def test_each_row_gets_its_own_adapters_logits(tiny_model_dir, adapters):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = torch.tensor([tok.encode("question 3 and more words")] * 4)
    model = base_model(tiny_model_dir)
    multi = MultiLora(model)
    for name, path in adapters.items():
        multi.add(name, LoraWeights.load(path))
    plan = ["ahoy", None, "howdy", "ahoy"]
    with multi.rows(plan):
        mixed = model(input_ids=ids).logits
    plain = model(input_ids=ids).logits  # outside rows(): the base alone
    expected = {None: base_model(tiny_model_dir)(input_ids=ids[:1]).logits[0]}
    for name, path in adapters.items():
        expected[name] = merged_model(base_model(tiny_model_dir), path)(input_ids=ids[:1]).logits[0]
    for row, name in enumerate(plan):
        assert torch.allclose(mixed[row], expected[name], atol=1e-4), (row, name)
    assert torch.allclose(plain[1], expected[None], atol=1e-6) and not torch.allclose(expected["ahoy"], expected[None], atol=1e-3)


@torch.no_grad()
def test_greedy_answers_of_a_mixed_batch_equal_each_alone(tiny_model_dir, adapters):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = tok.apply_chat_template([{"role": "user", "content": "question 5"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)["input_ids"]
    model = base_model(tiny_model_dir)
    multi = MultiLora(model)
    for name, path in adapters.items():
        multi.add(name, LoraWeights.load(path))
    plan = ["howdy", "ahoy", None]
    with multi.rows(plan):
        together = model.generate(input_ids=prompt.repeat(3, 1), max_new_tokens=6, do_sample=False)
    texts = [tok.decode(row[prompt.shape[1]:], skip_special_tokens=True) for row in together]

    def alone(model) -> str:
        return tok.decode(model.generate(input_ids=prompt, max_new_tokens=6, do_sample=False)[0, prompt.shape[1]:],
                          skip_special_tokens=True)

    expected = [alone(merged_model(base_model(tiny_model_dir), adapters["howdy"])),
                alone(merged_model(base_model(tiny_model_dir), adapters["ahoy"])), alone(base_model(tiny_model_dir))]
    assert texts == expected and len(set(texts)) == 3


def test_unknown_adapters_and_wrong_row_counts_are_refused(tiny_model_dir, adapters):
    model = base_model(tiny_model_dir)
    multi = MultiLora(model)
    multi.add("ahoy", LoraWeights.load(adapters["ahoy"]))
    with pytest.raises(KeyError):
        with multi.rows(["nope"]):
            pass
    with pytest.raises(ValueError), torch.no_grad(), multi.rows(["ahoy"]):
        model(input_ids=torch.tensor([[1, 2], [3, 4]]))
    multi.remove("ahoy")
    assert multi.names == [] and not multi._hooks


def test_mixed_base_and_adapter_rows_in_one_continuous_batch_each_get_their_own_models_answer(tiny_model_dir, adapters):
    """The learning-loop issue's check at the batcher: greedy outputs equal the same requests run
    alone, base rows on the base, adapter rows on their adapter merged in; rows joining a running
    batch at different steps."""
    from genloom.config import RuntimeSettings
    from genloom.jobs import SamplingParams
    from genloom.runtimes.text import TextRuntime
    from genloom.runtimes.text_batch import DecodeBatch, NewSequence
    from tests.runtimes.test_text_batch import PROMPTS, run

    base = TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings())
    merged = {name: TextRuntime(name=name, path=tiny_model_dir, settings=RuntimeSettings(), adapter=path)
              for name, path in adapters.items()}
    plan = [None, "ahoy", "howdy", "ahoy", None, "howdy"]
    params = SamplingParams(max_tokens=12, temperature=0)
    seqs = [NewSequence(i, base.encode_completion(p), params, adapter=plan[i]) for i, p in enumerate(PROMPTS)]
    alone = {}
    for seq in seqs:
        runtime = base if seq.adapter is None else merged[seq.adapter]
        alone.update(run(runtime.new_batch(), [NewSequence(seq.key, seq.prompt_ids, params)]))
    multi = MultiLora(base.model)
    for name, path in adapters.items():
        multi.add(name, LoraWeights.load(path))

    def batch() -> DecodeBatch:
        return DecodeBatch(model=base.model, tokenizer=base.tokenizer, eos_token_ids=base.eos_token_ids,
                           max_context=base.max_context, device=base.device, adapters=multi)

    assert run(batch(), seqs) == alone
    for every in (1, 3):
        assert run(batch(), seqs, join_every=every) == alone
    assert len({alone[i][0] for i in (0, 1, 2)}) == 3  # base and the two adapters answer differently


@pytest.mark.parametrize("path", ["dense", "gather"])
@torch.no_grad()
def test_adapters_of_different_ranks_and_layers_mix_by_either_path(tiny_model_dir, tmp_path, monkeypatch, path):
    """Both ways of computing a mixed batch (every adapter's columns masked per row, or each row's
    weights gathered) give each row its merged adapter's logits, with ranks padded and layers an
    adapter does not touch left to the base."""
    from peft import LoraConfig, get_peft_model

    import genloom.runtimes.multi_lora as multi_lora

    monkeypatch.setattr(multi_lora, "DENSE_COLUMNS", 10_000 if path == "dense" else 0)
    shapes = {"wide": (8, "all-linear"), "narrow": (2, ["q_proj", "v_proj"]), "mlp": (4, ["up_proj", "down_proj"])}
    dirs = {}
    for i, (name, (rank, targets)) in enumerate(shapes.items()):
        torch.manual_seed(i)
        model = get_peft_model(base_model(tiny_model_dir), LoraConfig(r=rank, lora_alpha=3 * rank, target_modules=targets,
                                                                     init_lora_weights=False))
        model.save_pretrained(tmp_path / name)
        dirs[name] = tmp_path / name
    ids = torch.tensor([[5, 9, 14, 3, 7]] * 5)
    model = base_model(tiny_model_dir)
    multi = MultiLora(model)
    for name, adapter in dirs.items():
        multi.add(name, LoraWeights.load(adapter))
    plan = ["narrow", None, "wide", "mlp", "narrow"]
    with multi.rows(plan):
        mixed = model(input_ids=ids).logits
    with multi.rows(["mlp"] * 5):  # one adapter on every row: the plain-matmul path
        single = model(input_ids=ids).logits
    expected = {None: base_model(tiny_model_dir)(input_ids=ids[:1]).logits[0]}
    for name, adapter in dirs.items():
        expected[name] = merged_model(base_model(tiny_model_dir), adapter)(input_ids=ids[:1]).logits[0]
    for row, name in enumerate(plan):
        assert torch.allclose(mixed[row], expected[name], atol=1e-4), (row, name)
    assert all(torch.allclose(single[row], expected["mlp"], atol=1e-4) for row in range(5))
    assert len({round(float(v.sum()), 3) for v in expected.values()}) == 4  # four different models


def test_an_adapter_that_does_not_fit_is_refused_at_attach_and_the_others_keep_working(tiny_model_dir, adapters):
    model = base_model(tiny_model_dir)
    multi = MultiLora(model)
    multi.add("ahoy", LoraWeights.load(adapters["ahoy"]))
    good = LoraWeights.load(adapters["howdy"])
    module, (a, b) = next(iter(good.modules.items()))
    misfit = LoraWeights(modules={module: (torch.zeros(a.shape[0], a.shape[1] + 1), b)}, scale=1.0)
    with pytest.raises(ValueError, match="do not fit"):
        multi.add("misfit", misfit)
    assert multi.names == ["ahoy"]
    with torch.no_grad(), multi.rows(["ahoy", None]):  # a mixed batch still runs
        model(input_ids=torch.tensor([[1, 2], [3, 4]]))


@pytest.mark.parametrize("config", [{"use_dora": True}, {"target_modules": ["embed_tokens", "q_proj"]}])
def test_what_cannot_be_applied_per_row_is_unsupported(tiny_model_dir, tmp_path, config):
    """DoRA and LoRA on embeddings would not give what PEFT's merge gives: the loader says so."""
    from peft import LoraConfig, get_peft_model

    from genloom.runtimes.multi_lora import UnsupportedAdapter

    peft_model = get_peft_model(base_model(tiny_model_dir), LoraConfig(**{"r": 2, "target_modules": ["q_proj"], **config}))
    peft_model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(UnsupportedAdapter):
        LoraWeights.load(tmp_path / "adapter")
