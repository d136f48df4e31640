"""Where image serving time goes, in-process: seconds per image of one pipeline call at batch
1, 8 and 16, and a conv2d on the main thread against a worker thread with 2 and 1 torch threads.

python bench/image_profile.py [PIPELINE_DIR]   (default: the built-in genloom-image-mini)
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from pathlib import Path


def per_image(path: Path) -> None:
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    pipe("warm-up", num_inference_steps=2)
    for batch in (1, 8, 16):
        started = time.perf_counter()
        pipe(["a red circle on a white background"] * batch, num_inference_steps=20, guidance_scale=4.0,
             generator=[torch.Generator().manual_seed(i) for i in range(batch)])
        print(f"batch {batch:2d}: {(time.perf_counter() - started) / batch * 1000:.0f} ms per image", flush=True)


def conv_on_threads() -> None:
    import torch

    conv, x = torch.nn.Conv2d(64, 64, 3, padding=1), torch.randn(2, 64, 8, 8)

    def timed(label: str, threads: int | None = None) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            for _ in range(50):
                conv(x)
            started = time.perf_counter()
            for _ in range(2000):
                conv(x)
        print(f"conv2d 64->64 3x3 on 2x64x8x8, {label}: {(time.perf_counter() - started) / 2000 * 1e6:.0f} us", flush=True)

    timed(f"main thread, {torch.get_num_threads()} torch threads")
    for threads in (torch.get_num_threads(), 1):
        worker = threading.Thread(target=timed, args=(f"worker thread, {threads} torch threads", threads))
        worker.start()
        worker.join()


def main(argv: list[str]) -> int:
    if argv:
        per_image(Path(argv[0]))
    else:
        from genloom.builtin.image_model import MODEL_NAME, assemble
        from genloom.config.settings import BUILTIN_MODELS_DIR

        with tempfile.TemporaryDirectory() as tmp:
            per_image(assemble(BUILTIN_MODELS_DIR / MODEL_NAME, Path(tmp) / MODEL_NAME))
    conv_on_threads()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
