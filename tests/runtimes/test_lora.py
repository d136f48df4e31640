"""LoRA fine-tuning on a tiny random model: the answer's loss falls, only answers are learned,
a run stopped at a checkpoint resumes to the same adapter as one that never stopped, and the
merged model answers in the learned style."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genloom.runtimes.lora import LoraSettings, LoraTrainer, TrainSettings, TrainingInputError, _encode, merged_model

STYLE = "Ahoy! {q} Arr."


def rows(n: int) -> list[list[dict[str, str]]]:
    questions = [f"question number {i} about ships" for i in range(n)]
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": STYLE.format(q=q.split()[1])}] for q in questions]


def trainer(tiny_model_dir: Path, out: Path, **train) -> LoraTrainer:
    settings = TrainSettings(**({"n_epochs": 4, "batch_size": 4, "learning_rate": 5e-3, "checkpoint_every": 3, "seed": 1} | train))
    return LoraTrainer(base_path=tiny_model_dir, out_dir=out, lora=LoraSettings(r=4, alpha=8), train=settings)


def test_the_answers_loss_falls_and_the_adapter_is_written(tiny_model_dir, tmp_path):
    steps = []
    result = trainer(tiny_model_dir, tmp_path / "run").run(rows(16), rows(20)[16:], on_step=steps.append)
    assert result.steps == steps[-1].step == 16 and [s.step for s in steps] == list(range(1, 17))
    assert result.eval_loss < 0.8 * result.base_eval_loss
    assert result.checkpoints == [3, 6, 9, 12, 15, 16]
    assert (result.adapter_dir / "adapter_config.json").is_file() and steps[-1].eta_s == 0


def test_only_the_answer_is_learned(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, labels = _encode(tok, rows(1)[0], 512)
    learned = [t for t, lab in zip(ids, labels) if lab != -100]
    assert "Ahoy" in tok.decode(learned) and "question" not in tok.decode(learned)
    assert labels[0] == -100


def test_a_stopped_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path):
    whole = trainer(tiny_model_dir, tmp_path / "whole").run(rows(12), [])
    calls = {"n": 0}

    def stop_after_six() -> bool:
        calls["n"] += 1
        return calls["n"] > 6  # checked before each step: six steps run, a checkpoint at 6

    interrupted = trainer(tiny_model_dir, tmp_path / "broken")
    first = interrupted.run(rows(12), [], should_stop=stop_after_six)
    assert first.stopped and first.steps == 6 and interrupted.latest_checkpoint() == 6
    half_saved = interrupted.checkpoint_dir(9).with_name("step-0000009.tmp")  # a kill in the middle of a save
    half_saved.mkdir()
    (half_saved / "trainer_state.pt").write_bytes(b"")
    assert interrupted.latest_checkpoint() == 6
    resumed = trainer(tiny_model_dir, tmp_path / "broken").run(rows(12), [])
    assert resumed.resumed_from == 6 and resumed.steps == whole.steps == 12
    a = load_file(str(whole.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_the_merged_model_answers_in_the_learned_style(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = trainer(tiny_model_dir, tmp_path / "style", n_epochs=12).run(rows(16), [])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompt = tok.apply_chat_template([{"role": "user", "content": "question number 99 about ships"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    tuned = merged_model(base, result.adapter_dir)
    out = tuned.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert tok.decode(out[0, prompt["input_ids"].shape[1]:]).startswith("Ahoy!")


def test_rows_without_an_answer_are_refused(tiny_model_dir, tmp_path):
    with pytest.raises(TrainingInputError):
        trainer(tiny_model_dir, tmp_path / "none").run([[{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]] * 0, [])


def test_an_adapter_packs_to_the_same_bytes_and_unpacks_once(tmp_path):
    from genloom.runtimes.lora import pack_adapter, unpack_adapter
    from genloom.store.files import FileBlobStore

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\0" * 64)
    blobs = FileBlobStore(tmp_path / "blobs")
    sha = blobs.put(pack_adapter(adapter))
    assert blobs.put(pack_adapter(adapter)) == sha  # the same adapter is one blob
    unpacked = unpack_adapter(blobs, sha, tmp_path / "adapters")
    assert sorted(p.name for p in unpacked.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert (unpacked / "adapter_config.json").read_text() == '{"r": 4}'
    (unpacked / "adapter_config.json").write_text("{}")  # already there: not unpacked again
    assert (unpack_adapter(blobs, sha, tmp_path / "adapters") / "adapter_config.json").read_text() == "{}"
