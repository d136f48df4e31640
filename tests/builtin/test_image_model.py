"""genloom-image-mini's building blocks: the picture world, the grader, captions that fit the
tokenizer, a tiny resumable training run, and assembly into a loadable diffusers directory."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from genloom.builtin import image_model as im


def test_the_grader_reads_colour_and_shape_of_drawn_pictures():
    rng = random.Random(3)
    scenes = [im.sample_scene(rng) for _ in range(400)]
    graded = [im.classify(im.render(s, 64, jitter=rng)) for s in scenes]
    assert sum(g == (s.colour, s.shape) for g, s in zip(graded, scenes)) >= 396  # at least 99%


def test_the_grader_says_none_for_an_empty_picture():
    assert im.classify(np.full((64, 64, 3), 128, dtype=np.uint8)) == ("none", "none")


def test_scenes_keep_the_figure_and_background_apart_and_large_ones_centred():
    rng = random.Random(0)
    for _ in range(500):
        scene = im.sample_scene(rng)
        assert scene.colour != scene.background
        assert scene.size != "large" or scene.position == "center"


@pytest.mark.parametrize("templates", [im.TRAIN_TEMPLATES, im.HELD_OUT_TEMPLATES])
def test_every_caption_fits_the_tokenizer_and_has_the_right_article(templates):
    from transformers import BertTokenizerFast

    tokenizer = BertTokenizerFast.from_pretrained(im.text_encoder_source())
    rng = random.Random(1)
    for _ in range(300):
        scene = im.sample_scene(rng)
        text = im.caption(scene, rng, templates)
        assert "{" not in text and "  " not in text
        assert " a orange" not in text and " a a" not in text and not text.startswith("a orange")
        assert len(tokenizer(text).input_ids) <= im.ImageModelConfig().max_tokens
    assert set(t for t in im.HELD_OUT_TEMPLATES) & set(im.TRAIN_TEMPLATES) == set()


def test_a_tiny_training_run_exports_a_pipeline_and_resumes(tmp_path: Path):
    cfg = im.ImageModelConfig(images=64, vae_steps=4, vae_whole_steps=2, unet_steps=3, batch_size=4, checkpoint_every=2,
                              eval_images=4, eval_steps=2)
    work, out = tmp_path / "work", tmp_path / "out"
    metrics = im.train(cfg, work, out)
    assert metrics["evaluation"]["images"] == 4
    assert 0 <= metrics["evaluation"]["colour_accuracy"] <= 1
    assert (out / "model_index.json").is_file() and im.needs_assembly(out)
    assert torch.load(work / "unet.pt", weights_only=False)["step"] == 3
    vae_written = (work / "vae.pt").stat().st_mtime_ns

    # More steps continue from the checkpoint: the VAE is done and is not trained again.
    cfg.unet_steps = 5
    im.train(cfg, work, out)
    assert torch.load(work / "unet.pt", weights_only=False)["step"] == 5
    assert (work / "vae.pt").stat().st_mtime_ns == vae_written


def test_assembly_makes_a_directory_stable_diffusion_loads(tmp_path: Path):
    from diffusers import StableDiffusionPipeline

    cfg = im.ImageModelConfig(image_size=32)
    tokenizer, _ = im.load_text_encoder(cfg.max_tokens)
    torch.manual_seed(0)
    im.export(im.build_unet(cfg, channels=(32, 32, 32)), im.build_vae(cfg, channels=(16, 16, 16, 16)), tokenizer, tmp_path / "shipped")
    assembled = im.assemble(tmp_path / "shipped", tmp_path / "assembled")
    assert not im.needs_assembly(assembled)
    pipe = StableDiffusionPipeline.from_pretrained(assembled)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, output_type="np").images[0]
    assert image.shape == (32, 32, 3)
    # Assembling again keeps a directory that matches; a changed shipped file rebuilds it.
    marker = (assembled / ".genloom-assembled.json").stat().st_mtime_ns
    im.assemble(tmp_path / "shipped", tmp_path / "assembled")
    assert (assembled / ".genloom-assembled.json").stat().st_mtime_ns == marker
    (tmp_path / "shipped" / "scheduler" / "scheduler_config.json").write_text(
        (tmp_path / "shipped" / "scheduler" / "scheduler_config.json").read_text().replace("1000", "999")
    )
    rebuilt = im.assemble(tmp_path / "shipped", tmp_path / "assembled")
    assert "999" in (rebuilt / "scheduler" / "scheduler_config.json").read_text()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # nothing left aside


def test_a_pipeline_another_process_assembled_meanwhile_is_used_not_moved_away(tmp_path: Path, monkeypatch):
    """A worker and an API replica share a data dir and start together. The one that finishes
    building second must use the first one's directory, which may already be loading, not move
    it away and put its own in its place."""
    import tempfile

    from genloom.config.settings import BUILTIN_MODELS_DIR

    shipped = BUILTIN_MODELS_DIR / "genloom-image-mini"
    target = tmp_path / "models" / "genloom-image-mini"
    real_mkdtemp = tempfile.mkdtemp
    other: list[int] = []

    def mkdtemp(*args, **kwargs):
        building = real_mkdtemp(*args, **kwargs)
        if not other:  # while this one builds, the other process completes its directory
            other.append(0)
            other[0] = (im.assemble(shipped, target) / "model_index.json").lstat().st_ino
        return building

    monkeypatch.setattr(im.tempfile, "mkdtemp", mkdtemp)
    assert im.assemble(shipped, target) == target
    assert (target / "model_index.json").lstat().st_ino == other[0]  # the first directory stayed
    assert (target / "text_encoder" / "model.safetensors").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["genloom-image-mini"]  # nothing left aside
