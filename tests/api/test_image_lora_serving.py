"""Image LoRA versions through `genloom serve` and the official client: a diffusers LoRA registered
as a version of its own is drawn by the base's pipeline (one copy of the weights), its pictures
equal those of a pipeline with the LoRA loaded on its own, differ from the base's, and follow the
request's `lora_scale` (0 draws the base's picture); base and LoRA requests sent together each get
their own picture; a bad `lora_scale` is a 400 naming it."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

from genloom.worker.adapter_worker import AdapterWorker
from genloom.worker.image_worker import ImageWorker
from tests.api.conftest import running_server


def random_lora(pipeline_dir: Path, out: Path, seed: int) -> Path:
    """A diffusers LoRA file for the pipeline's UNet attention, with random non-zero weights."""
    import torch
    from diffusers import DiffusionPipeline, StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = DiffusionPipeline.from_pretrained(pipeline_dir).unet
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian", target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    layers = {k: torch.randn_like(v) * 0.5 if "lora_B" in k or "lora.up" in k else v for k, v in layers.items()}
    StableDiffusionPipeline.save_lora_weights(str(out), unet_lora_layers=layers, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def loras(tiny_image_model_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("image-loras")
    # A '.' in a version name (which PEFT's adapter names may not hold) is fine.
    return {"sd-1.5-ink": random_lora(tiny_image_model_dir, root / "ink", 1), "sd-neon": random_lora(tiny_image_model_dir, root / "neon", 2)}


def models(image_dir: Path, tiny_model_dir: Path, loras: dict[str, Path]) -> list[dict]:
    return [{"name": "tiny", "path": str(tiny_model_dir)}, {"name": "sd", "kind": "image", "path": str(image_dir)}] + [
        {"name": name, "kind": "image", "path": str(image_dir), "adapter": str(path)} for name, path in loras.items()
    ]


def picture(base_url: str, model: str, **extra) -> np.ndarray:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    out = client.images.generate(model=model, prompt="a lighthouse at dusk", size="32x32",
                                 extra_body={"seed": 7, "steps": 4, **extra})
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(out.data[0].b64_json))).convert("RGB"), dtype=np.int16)


REQUESTS = [("sd", {}), ("sd-1.5-ink", {}), ("sd-neon", {}), ("sd-1.5-ink", {"lora_scale": 0.5})]


def all_at_once(base_url: str) -> list[np.ndarray]:
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        return list(pool.map(lambda r: picture(base_url, r[0], **r[1]), REQUESTS))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_image_model_dir, tiny_model_dir, loras) -> list[np.ndarray]:
    """Each LoRA on a pipeline of its own (`batch_adapters: false`), one request at a time."""
    with running_server(tmp_path_factory.mktemp("own"), tiny_model_dir, models=models(tiny_image_model_dir, tiny_model_dir, loras),
                        runtime={"batch_adapters": False}) as (base_url, server):
        assert sum(isinstance(w, ImageWorker) for w in server.workers) == 3
        return [picture(base_url, model, **extra) for model, extra in REQUESTS]


def test_lora_versions_are_drawn_by_the_base_pipeline_with_their_own_pictures(tmp_path_factory, tiny_image_model_dir,
                                                                            tiny_model_dir, loras, reference):
    with running_server(tmp_path_factory.mktemp("shared"), tiny_model_dir,
                        models=models(tiny_image_model_dir, tiny_model_dir, loras)) as (base_url, server):
        [base] = [w for w in server.workers if isinstance(w, ImageWorker)]  # one pipeline for the three versions
        assert base.model == "sd@v1" and set(base.adapters) == {"sd-1.5-ink@v1", "sd-neon@v1"}
        assert {w.model for w in server.workers if isinstance(w, AdapterWorker)} == {"sd-1.5-ink@v1", "sd-neon@v1"}
        got = all_at_once(base_url)
        at_zero = picture(base_url, "sd-neon", lora_scale=0)
        http = httpx.Client(base_url=base_url, timeout=30)
        bad = http.post("/v1/images/generations", json={"model": "sd", "prompt": "x", "lora_scale": 0.5})
        too_strong = http.post("/v1/images/generations", json={"model": "sd-1.5-ink", "prompt": "x", "lora_scale": 3})
        png = http.post("/v1/images/generations", json={"model": "sd-1.5-ink", "prompt": "x", "size": "32x32", "seed": 1,
                                                        "steps": 2, "lora_scale": 0.25})
    for mine, theirs in zip(got, reference):
        assert np.abs(mine - theirs).max() <= 1  # the same picture (PNG rounding aside)
    base_picture, ink, neon, half_ink = reference
    assert np.abs(ink - base_picture).mean() > 5 and np.abs(neon - ink).mean() > 5  # each LoRA draws its own
    assert np.abs(half_ink - ink).mean() > 1 and np.abs(half_ink - base_picture).mean() > 1  # the scale is applied
    assert np.abs(at_zero - base_picture).max() <= 1  # at 0, the base's picture
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "lora_scale"
    assert too_strong.status_code == 400 and too_strong.json()["error"]["param"] == "lora_scale"
    from genloom.runtimes.image import read_provenance

    provenance = read_provenance(base64.b64decode(png.json()["data"][0]["b64_json"]))
    assert provenance["model"] == "sd-1.5-ink@v1" and provenance["lora_scale"] == 0.25
