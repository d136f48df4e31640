"""Image runtime: loads any diffusers pipeline directory from local disk and runs batches of
compatible requests through one pipeline call.

A batch is compatible when size, steps, guidance scale and scheduler are the same: those are
scalars of a diffusers call. Prompts, negative prompts and seeds are per image, so each image
comes out as it would alone (one torch.Generator per image). Nothing here knows about queues or HTTP."""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genloom.jobs import ImageTask

# Scheduler names a request may ask for, and the diffusers class each one means.
SCHEDULERS = {
    "ddim": "DDIMScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "heun": "HeunDiscreteScheduler",
    "pndm": "PNDMScheduler",
    "unipc": "UniPCMultistepScheduler",
}
PROVENANCE_KEY = "genloom:provenance"  # the PNG text chunk that holds a picture's provenance JSON
GENERATED_BY = "genloom"


class ImageInputError(ValueError):
    """A request this model cannot run (a size it cannot make, an unknown scheduler)."""


class GenerationStopped(RuntimeError):
    """A batch ended early because nobody wanted its images any more."""


@dataclass(frozen=True)
class ImageInfo:
    name: str
    path: Path
    created: int  # when the pipeline was written (model_index.json's modification time)
    pipeline: str  # the diffusers pipeline class
    revision: str  # a fingerprint of the configs and weight files: changes when the model does
    default_size: int  # the side the model was trained at
    size_multiple: int  # width and height must be multiples of this
    default_scheduler: str  # one of SCHEDULERS, or the class name when it is none of them
    parameters: int
    device: str
    dtype: str


def _fingerprint(path: Path) -> str:
    """sha256 over every config file's content and every weight file's name and size: cheap at
    load for a multi-GB checkpoint, and different whenever a component is replaced."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path).as_posix()
        digest.update(rel.encode())
        if file.suffix == ".json":
            digest.update(file.read_bytes())
        else:
            digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()[:16]


class ImageRuntime:
    def __init__(
        self, *, name: str, path: Path, device: str = "auto", dtype: str = "auto", torch_threads: int = 0,
        load_weights: bool = True, adapter: Path | None = None,
    ) -> None:
        """`device` is a torch device or "auto" (CUDA when there is one); `dtype` "auto" is float32
        on CPU and float16 on CUDA. Without `load_weights` only the pipeline's configs are read:
        enough to check requests (an API replica), not to generate (`pipe` is None). `adapter`: a
        diffusers LoRA this model always applies (a LoRA version loaded on its own)."""
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "float16" if device.startswith("cuda") else "float32"
        self._torch = torch
        self._lock = threading.Lock()  # one call at a time: the scheduler is swapped per call
        self.pipe: Any = None
        self.adapter = adapter
        self._loras: set[str] = set()  # LoRA adapters loaded into the pipeline, by name
        if load_weights:
            self._load(Path(path), device, dtype)
            if adapter is not None:
                self.add_lora(name, adapter)
            pipe = self.pipe
            unet = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
            unet_config = dict(getattr(unet, "config", None) or {})
            vae_scale = getattr(pipe, "vae_scale_factor", 8)
            pipeline, default_class = type(pipe).__name__, type(pipe.scheduler).__name__
            modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
            parameters = sum(p.numel() for m in modules for p in m.parameters())
        else:
            from genloom.runtimes.weights import count_parameters

            index = _json(Path(path) / "model_index.json")
            denoiser = "unet" if "unet" in index else "transformer"
            unet_config = _json(Path(path) / denoiser / "config.json")
            vae_levels = len(_json(Path(path) / "vae" / "config.json").get("block_out_channels", (0, 0, 0, 0)))
            vae_scale = 2 ** (vae_levels - 1)
            pipeline = index["_class_name"]
            default_class = _json(Path(path) / "scheduler" / "scheduler_config.json")["_class_name"]
            parameters = count_parameters(Path(path))
            device = "none (API replica)"
        sample = unet_config.get("sample_size") or 64
        levels = len(unet_config.get("block_out_channels") or (0,))
        self.info = ImageInfo(
            name=name,
            path=Path(path),
            created=int((Path(path) / "model_index.json").stat().st_mtime),
            pipeline=pipeline,
            revision=_fingerprint(Path(path)),
            default_size=int(sample) * vae_scale,
            size_multiple=vae_scale * 2 ** max(0, levels - 1),
            default_scheduler=next((k for k, v in SCHEDULERS.items() if v == default_class), default_class),
            parameters=parameters,
            device=device,
            dtype=dtype,
        )

    def _load(self, path: Path, device: str, dtype: str) -> None:
        from diffusers import DiffusionPipeline

        from genloom.runtimes.weights import touch_weights
        from diffusers.utils import logging as diffusers_logging
        from transformers.utils import logging as hf_logging

        diffusers_logging.disable_progress_bar()
        hf_logging.disable_progress_bar()
        self.pipe = DiffusionPipeline.from_pretrained(path, dtype=getattr(self._torch, dtype)).to(device)
        self.pipe.set_progress_bar_config(disable=True)
        touch_weights(*(c for c in self.pipe.components.values() if isinstance(c, self._torch.nn.Module)))
        self._schedulers: dict[str | None, Any] = {None: self.pipe.scheduler}

    @property
    def name(self) -> str:
        return self.info.name

    def check(self, task: ImageTask) -> None:
        """Raise ImageInputError for what this model cannot make."""
        multiple = self.info.size_multiple
        for side, value in (("width", task.width), ("height", task.height)):
            if value % multiple:
                raise ImageInputError(f"{side} {value} is not a multiple of {multiple}, which model {self.name} needs")
        if task.scheduler is not None and task.scheduler not in SCHEDULERS:
            raise ImageInputError(f"unknown scheduler {task.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")

    def add_lora(self, name: str, adapter: Path) -> None:
        """Load a diffusers LoRA into the pipeline under `name`; calls that name it apply it."""
        from genloom.config.settings import diffusers_lora_file

        weights = diffusers_lora_file(Path(adapter))
        if weights is None:
            raise ValueError(f"{adapter} is not a diffusers LoRA")
        with self._lock:
            try:
                self.pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name=_peft_name(name))
            except Exception:
                self._drop(name)  # nothing half-loaded may stay active or keep the name taken
                raise
            self._loras.add(name)
            self._apply(None, 1.0)  # loading one activates it: back to the base until a call names it

    def remove_lora(self, name: str) -> None:
        with self._lock:
            self._drop(name)

    def _drop(self, name: str) -> None:
        if any(_peft_name(name) in names for names in self.pipe.get_list_adapters().values()):
            self.pipe.delete_adapters([_peft_name(name)])
        self._loras.discard(name)
        self._apply(None, 1.0)

    @property
    def loras(self) -> list[str]:
        return sorted(self._loras)

    def _apply(self, lora: str | None, scale: float) -> None:
        """The pipeline's LoRA state for the next call: `lora` at `scale`, or none (the base alone)."""
        if lora is not None:
            self.pipe.enable_lora()
            self.pipe.set_adapters([_peft_name(lora)], adapter_weights=[scale])
        elif self._loras:
            self.pipe.disable_lora()

    def generate(self, tasks: list[ImageTask], should_stop: Callable[[], bool] | None = None,
                 lora: str | None = None) -> list[list[Any]]:
        """Run tasks that share a batch_key as one pipeline call; PIL images per task, in order.

        `should_stop` is asked after every denoising step, where the pipeline supports step
        callbacks; when it says yes the call ends early with GenerationStopped. `lora`: a LoRA
        added with `add_lora` to apply (at the tasks' `lora_scale`); by default this model's own
        `adapter`, if it has one, else none."""
        if not tasks:
            return []
        key = tasks[0].batch_key
        if any(t.batch_key != key for t in tasks):
            raise ValueError("tasks in one batch must share size, steps, guidance scale and scheduler")
        for task in tasks:
            self.check(task)
        first = tasks[0]
        prompts = [t.prompt for t in tasks for _ in range(t.n)]
        negatives = [t.negative_prompt or "" for t in tasks for _ in range(t.n)]
        device = self.info.device
        generators = [self._torch.Generator(device=device).manual_seed(t.seed + i) for t in tasks for i in range(t.n)]
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "height": first.height,
            "width": first.width,
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance_scale,
            "generator": generators,
        }
        # An empty negative prompt is what the pipeline uses without one; leaving it out keeps
        # pipelines that take no negative prompt working.
        if any(negatives):
            kwargs["negative_prompt"] = negatives
        stopped = False
        if should_stop is not None and "callback_on_step_end" in inspect.signature(self.pipe.__call__).parameters:

            def on_step_end(pipe, step, timestep, callback_kwargs):
                nonlocal stopped
                if should_stop():
                    stopped = True
                    pipe._interrupt = True
                return callback_kwargs

            kwargs["callback_on_step_end"] = on_step_end
        lora = lora if lora is not None else (self.name if self.adapter is not None else None)
        if lora is not None and lora not in self._loras:
            raise ValueError(f"LoRA {lora} is not loaded on model {self.name}")
        with self._lock, self._torch.inference_mode():
            self._apply(lora, first.lora_scale)
            self.pipe.scheduler = self._scheduler(first.scheduler)
            images = self.pipe(**kwargs).images
        if stopped:
            raise GenerationStopped("the batch was stopped: its requests were cancelled or the server is stopping")
        out, start = [], 0
        for task in tasks:
            out.append(images[start : start + task.n])
            start += task.n
        return out

    def _scheduler(self, name: str | None):
        if name not in self._schedulers:
            import diffusers

            cls = getattr(diffusers, SCHEDULERS[name])  # type: ignore[index]  # check() allows only known names
            self._schedulers[name] = cls.from_config(self._schedulers[None].config)
        return self._schedulers[name]

    def provenance(self, task: ImageTask, index: int) -> dict[str, Any]:
        """What goes into image `index` of `task`: enough to make it again."""
        return {
            "generated_by": GENERATED_BY,
            "model": self.info.name,
            "model_revision": self.info.revision,
            "pipeline": self.info.pipeline,
            "prompt": task.prompt,
            "negative_prompt": task.negative_prompt,
            "seed": task.seed + index,
            "width": task.width,
            "height": task.height,
            "steps": task.steps,
            "guidance_scale": task.guidance_scale,
            "scheduler": task.scheduler or self.info.default_scheduler,
            **task.provenance,
        }


def _peft_name(version: str) -> str:
    """The adapter's name inside the pipeline: PEFT keeps adapters in module dicts, whose keys may
    not hold '.', which version names may."""
    return "lora_" + hashlib.sha256(version.encode()).hexdigest()[:16]


def encode_png(image, provenance: dict[str, Any]) -> bytes:
    """PNG bytes with the provenance JSON in a text chunk, plus the standard Software chunk."""
    from PIL.PngImagePlugin import PngInfo

    from genloom import __version__

    info = PngInfo()
    info.add_text("Software", f"Genloom {__version__}")
    info.add_text(PROVENANCE_KEY, json.dumps(provenance, sort_keys=True, separators=(",", ":")))
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def read_provenance(png: bytes) -> dict[str, Any] | None:
    """The provenance a Genloom PNG carries; None for a PNG without it."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        text = getattr(image, "text", {}).get(PROVENANCE_KEY)
    return json.loads(text) if text else None


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())
