"""Image generation benchmark: `genloom serve` with C concurrent clients against one-at-a-time
diffusers on the same pipeline and settings, in one run; optionally the colour/shape accuracy
of the built-in model over N generations.

Run it as `genloom bench image --help` from a source checkout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _docs import write_section  # noqa: E402
from _load import percentile  # noqa: E402

SECTION = "## Images: batched serving against one-at-a-time diffusers"
PROMPTS = [
    "a red circle on a white background", "a small blue star", "a green triangle on a yellow background",
    "a large purple square", "an orange star on a black background", "a yellow circle in the top left corner",
    "a white triangle on a blue background", "a black square on an orange background",
]


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="genloom bench image", description=__doc__)
    p.add_argument("--model-dir", type=Path, help="a diffusers pipeline directory [default: the built-in genloom-image-mini]")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients against genloom serve")
    p.add_argument("--requests-per-client", type=int, default=6)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance-scale", type=float, default=4.0)
    p.add_argument("--size", help="WIDTHxHEIGHT [default: the model's own]")
    p.add_argument("--max-batch-images", type=int, default=8, help="genloom's images.max_batch_images")
    p.add_argument("--batch-wait-s", type=float, help="genloom's images.batch_wait_s [default: the setting's default]")
    p.add_argument("--torch-threads", type=int, default=0, help="genloom's runtime.torch_threads (0: torch's default)")
    p.add_argument("--device", default="auto", help="torch device for both sides")
    p.add_argument("--accuracy", type=int, default=0, metavar="N", help="also grade N generations of the built-in (colour, shape)")
    p.add_argument("--write", type=Path, help="write the results into this markdown file (docs/benchmarks.md)")
    p.add_argument("--json", type=Path, help="write raw results as JSON")
    return p.parse_args(argv)


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown CPU"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def model_dir(args: argparse.Namespace, tmp: Path) -> Path:
    if args.model_dir:
        return args.model_dir.resolve()
    from genloom.builtin.image_model import MODEL_NAME, assemble
    from genloom.config.settings import BUILTIN_MODELS_DIR

    return assemble(BUILTIN_MODELS_DIR / MODEL_NAME, tmp / MODEL_NAME)


def sequential_diffusers(path: Path, args: argparse.Namespace, total: int) -> dict:
    """The peer: the same pipeline called once per request, one request at a time."""
    import torch
    from diffusers import DiffusionPipeline

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = DiffusionPipeline.from_pretrained(path, dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    size = _size(args, pipe)
    call = dict(num_inference_steps=args.steps, guidance_scale=args.guidance_scale, height=size[1], width=size[0])
    pipe(PROMPTS[0], generator=torch.Generator(device).manual_seed(0), **call)  # warm-up
    latencies = []
    started = time.perf_counter()
    for i in range(total):
        t0 = time.perf_counter()
        pipe(PROMPTS[i % len(PROMPTS)], generator=torch.Generator(device).manual_seed(i), **call)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    params = sum(p.numel() for m in pipe.components.values() if isinstance(m, torch.nn.Module) for p in m.parameters())
    return {"images": total, "wall_s": wall, "latencies": latencies, "device": device, "size": size, "parameters": params}


def _size(args: argparse.Namespace, pipe) -> tuple[int, int]:
    if args.size:
        w, h = args.size.lower().split("x")
        return int(w), int(h)
    side = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return side, side


def genloom_serving(path: Path, args: argparse.Namespace, tmp: Path) -> dict:
    """`genloom serve` with only this image model; C clients post requests back to back."""
    port = free_port()
    config = {
        "builtin_models": False, "data_dir": str(tmp / "data"), "auth": "disabled",
        "models": [{"name": "bench-image", "path": str(path), "kind": "image"}],
        "images": {"max_batch_images": args.max_batch_images, "max_images_per_request": 1}
        | ({"batch_wait_s": args.batch_wait_s} if args.batch_wait_s is not None else {}),
        "runtime": {"device": args.device, "torch_threads": args.torch_threads},
    }
    config_file = tmp / "genloom.yaml"
    config_file.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "genloom.cli", "serve", "--port", str(port), "--config", str(config_file)]
    print("genloom:", shlex.join(command), flush=True)
    log_path = tmp / "genloom.log"
    base = f"http://127.0.0.1:{port}"
    body = {"model": "bench-image", "steps": args.steps, "guidance_scale": args.guidance_scale, "size": args.size}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ | {"HF_HUB_OFFLINE": "1"})
        try:
            _wait_ready(proc, base, log_path)
            with httpx.Client(base_url=base, timeout=600, trust_env=False) as http:  # warm-up
                _post(http, body | {"prompt": PROMPTS[0], "seed": 0})
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client(c: int) -> None:
                with httpx.Client(base_url=base, timeout=600, trust_env=False) as http:
                    for r in range(args.requests_per_client):
                        i = c * args.requests_per_client + r
                        t0 = time.perf_counter()
                        try:
                            _post(http, body | {"prompt": PROMPTS[i % len(PROMPTS)], "seed": i})
                        except Exception as e:  # counted, not fatal: the figure says how many failed
                            with lock:
                                errors.append(str(e))
                            continue
                        with lock:
                            latencies.append(time.perf_counter() - t0)

            threads = [threading.Thread(target=client, args=(c,)) for c in range(args.clients)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - started
            return {"images": len(latencies), "errors": errors, "wall_s": wall, "latencies": latencies, "command": command}
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _post(http: httpx.Client, body: dict) -> None:
    answer = http.post("/v1/images/generations", json={k: v for k, v in body.items() if v is not None})
    answer.raise_for_status()
    if len(answer.json()["data"]) != 1:
        raise RuntimeError("expected one picture")


def _wait_ready(proc: subprocess.Popen, base: str, log_path: Path, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"genloom serve exited with code {proc.returncode}: {tail}")
        try:
            if httpx.get(base + "/readyz", timeout=2, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("genloom serve did not become ready")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import diffusers
    import torch

    total = args.clients * args.requests_per_client
    with tempfile.TemporaryDirectory(prefix="genloom-bench-image-") as tmp_name:
        tmp = Path(tmp_name)
        path = model_dir(args, tmp)
        print(f"one-at-a-time diffusers, {total} images ...", flush=True)
        peer = sequential_diffusers(path, args, total)
        print(f"genloom serve, {args.clients} clients x {args.requests_per_client} ...", flush=True)
        ours = genloom_serving(path, args, tmp)
        accuracy = None
        if args.accuracy:
            from genloom.builtin.image_model import evaluate

            print(f"grading {args.accuracy} generations ...", flush=True)
            accuracy = evaluate(path, args.accuracy, seed=1234, steps=args.steps, guidance=args.guidance_scale)

    peer_rate = peer["images"] / peer["wall_s"]
    our_rate = ours["images"] / ours["wall_s"] if ours["images"] else 0.0
    ratio = our_rate / peer_rate
    command = "genloom bench image " + shlex.join(argv) if argv else "genloom bench image"
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    w, h = peer["size"]
    device = peer["device"]
    hardware = f"{os.cpu_count()} CPUs ({cpu_name()})"
    if device.startswith("cuda"):
        hardware += f", {torch.cuda.get_device_name(0)}"
    machine = (f"{hardware}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
               f"model {args.model_dir.name if args.model_dir else 'genloom-image-mini'} "
               f"({peer['parameters'] / 1e6:.1f}M parameters), {w}x{h}, {args.steps} steps, guidance {args.guidance_scale:g}, on {device}")

    def row(name: str, r: dict, rate: float) -> str:
        lat = r["latencies"]
        return (f"| {name} | {r['images']} | {r['wall_s']:.1f} | {rate:.2f} | "
                f"{percentile(lat, 50) * 1000:.0f} | {percentile(lat, 99) * 1000:.0f} |")

    lines = [
        SECTION, "", f"Command: `{command}`", "", f"Date: {date}", "", f"Machine: {machine}.", "",
        f"Genloom: `genloom serve` with `images.max_batch_images: {args.max_batch_images}`, "
        f"`runtime.torch_threads: {args.torch_threads}`, {args.clients} concurrent "
        f"clients posting one-image requests back to back over HTTP. Peer: the same diffusers pipeline called once per "
        "request, one request at a time, in-process (no HTTP), after one warm-up call each.", "",
        "| server | images | wall s | images/s | latency p50 ms | latency p99 ms |",
        "|---|---|---|---|---|---|",
        row(f"genloom serve ({args.clients} clients)", ours, our_rate),
        row("diffusers, one at a time", peer, peer_rate),
        "",
        f"Batched images/s against one-at-a-time diffusers: **{ratio:.2f}x** (target 3x: {'met' if ratio >= 3 else 'missed'}).",
    ]
    if ours["errors"]:
        lines += ["", f"Failed requests: {len(ours['errors'])} (first: {ours['errors'][0]})."]
    if accuracy is not None:
        lines += [
            "", f"Colour/shape accuracy over {accuracy['images']} generations (half training phrasings, half held out), "
            f"graded by `genloom.builtin.image_model.classify`: colour {accuracy['colour_accuracy']:.1%}, "
            f"shape {accuracy['shape_accuracy']:.1%}, both {accuracy['both_accuracy']:.1%} "
            f"(training phrasings {accuracy['both_accuracy_train_phrasings']:.1%}, "
            f"held-out phrasings {accuracy['both_accuracy_held_out_phrasings']:.1%}); target 80% on colour and shape: "
            f"{'met' if min(accuracy['colour_accuracy'], accuracy['shape_accuracy']) >= 0.8 else 'missed'}.",
        ]
    section = "\n".join(lines)
    print("\n" + section, flush=True)
    if args.write:
        write_section(args.write, SECTION, section)
        print(f"wrote {args.write}")
    if args.json:
        args.json.write_text(json.dumps({"command": command, "date": date, "machine": machine, "genloom": ours,
                                         "diffusers": peer, "ratio": ratio, "accuracy": accuracy}, indent=2, default=str))
    return 0 if ours["images"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
