"""The image runtime on a tiny random diffusers pipeline built on the fly: determinism by seed,
batches that equal single runs, schedulers, size checks, provenance in the PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from genloom.runtimes.image import encode_png, GENERATED_BY, GenerationStopped, ImageInputError, ImageRuntime, read_provenance
from genloom.jobs import ImageTask


@pytest.fixture(scope="module")
def runtime(tiny_image_model_dir) -> ImageRuntime:
    return ImageRuntime(name="tiny-sd", path=tiny_image_model_dir, device="cpu")


def task(prompt: str = "a red circle", seed: int = 1, n: int = 1, **overrides) -> ImageTask:
    values = dict(prompt=prompt, negative_prompt=None, n=n, width=32, height=32, steps=3, guidance_scale=3.0, scheduler=None, seed=seed)
    values.update(overrides)
    return ImageTask(**values)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64)


def test_info_describes_the_pipeline(runtime, tiny_image_model_dir):
    info = runtime.info
    assert info.pipeline == "StableDiffusionPipeline"
    assert info.default_size == 32 and info.size_multiple == 32
    assert info.default_scheduler == "dpm++"
    assert info.parameters > 100_000
    assert len(info.revision) == 16


def test_same_seed_same_image_and_another_seed_another(runtime):
    first = runtime.generate([task(seed=11)])[0][0]
    again = runtime.generate([task(seed=11)])[0][0]
    other = runtime.generate([task(seed=12)])[0][0]
    assert first.size == (32, 32)
    assert np.array_equal(pixels(first), pixels(again))
    assert np.abs(pixels(first) - pixels(other)).mean() > 1.0


def test_a_batch_of_different_prompts_equals_each_prompt_alone(runtime):
    tasks = [task("a red circle", seed=1), task("a blue star on a yellow background", seed=2, n=2), task("green", seed=9, negative_prompt="blurry")]
    together = runtime.generate(tasks)
    assert [len(images) for images in together] == [1, 2, 1]
    for t, images in zip(tasks, together):
        alone = runtime.generate([t])[0]
        for a, b in zip(images, alone):
            # Batched matrix products may round differently: one step of 255 at most.
            assert np.abs(pixels(a) - pixels(b)).max() <= 1.0


def test_image_i_of_a_request_uses_seed_plus_i(runtime):
    two = runtime.generate([task(seed=40, n=2)])[0]
    second_alone = runtime.generate([task(seed=41)])[0][0]
    assert np.abs(pixels(two[1]) - pixels(second_alone)).max() <= 1.0
    assert np.abs(pixels(two[0]) - pixels(two[1])).mean() > 1.0


def test_the_scheduler_can_be_chosen_and_stays_deterministic(runtime):
    default = runtime.generate([task(seed=5)])[0][0]
    euler = runtime.generate([task(seed=5, scheduler="euler")])[0][0]
    euler_again = runtime.generate([task(seed=5, scheduler="euler")])[0][0]
    assert np.array_equal(pixels(euler), pixels(euler_again))
    assert not np.array_equal(pixels(default), pixels(euler))
    # Choosing a scheduler for one call does not change the next call's default.
    assert np.array_equal(pixels(runtime.generate([task(seed=5)])[0][0]), pixels(default))


def test_other_sizes_that_fit_the_model_work(runtime):
    image = runtime.generate([task(width=64, height=32)])[0][0]
    assert image.size == (64, 32)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"width": 40}, "multiple of 32"), ({"scheduler": "turbo"}, "unknown scheduler")],
)
def test_what_the_model_cannot_make_is_refused(runtime, overrides, message):
    with pytest.raises(ImageInputError, match=message):
        runtime.generate([task(**overrides)])


def test_tasks_of_different_shapes_cannot_share_a_batch(runtime):
    with pytest.raises(ValueError, match="share size, steps"):
        runtime.generate([task(), task(steps=4)])


def test_a_batch_nobody_wants_stops_early(runtime):
    calls = []

    def stop() -> bool:
        calls.append(1)
        return True

    with pytest.raises(GenerationStopped):
        runtime.generate([task(steps=5)], should_stop=stop)
    assert len(calls) == 1  # asked after the first step, and the loop ended there


def test_provenance_travels_inside_the_png(runtime):
    t = task(seed=77, provenance={"job_id": "job_123"})
    image = runtime.generate([t])[0][0]
    png = encode_png(image, runtime.provenance(t, 0))
    meta = read_provenance(png)
    assert meta["generated_by"] == GENERATED_BY
    assert meta["model"] == "tiny-sd" and meta["model_revision"] == runtime.info.revision
    assert meta["seed"] == 77 and meta["steps"] == 3 and meta["scheduler"] == "dpm++"
    assert meta["prompt"] == "a red circle" and meta["job_id"] == "job_123"
    with Image.open(io.BytesIO(png)) as decoded:
        assert decoded.text["Software"].startswith("Genloom ")
        assert np.array_equal(pixels(decoded.convert("RGB")), pixels(image))
    assert read_provenance(_plain_png()) is None


def _plain_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4)).save(out, format="PNG")
    return out.getvalue()
