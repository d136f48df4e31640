"""`genloom images generate`: make pictures on a running server and write them as PNG files."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from genloom.cli.jobs import ApiKeyOption, Server, TenantOption, TierOption, UrlOption, err
from genloom.runtimes.image import read_provenance

images_app = typer.Typer(help="Generate images on a running server.", no_args_is_help=True)
DEFAULT_IMAGE_MODEL = "genloom-image-mini"


def _outputs(out: Path, n: int) -> list[Path]:
    """out.png for one picture; out-1.png, out-2.png ... for several."""
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}") for i in range(1, n + 1)]


@images_app.command("generate")
def generate(
    prompt: Annotated[str, typer.Argument(help="What the picture shows.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write (several: NAME-1.png, NAME-2.png, ...).")] = Path("image.png"),
    model: Annotated[str, typer.Option(help="Image model.")] = DEFAULT_IMAGE_MODEL,
    n: Annotated[int, typer.Option("--n", "-n", help="How many pictures.")] = 1,
    size: Annotated[str | None, typer.Option(help="WIDTHxHEIGHT [default: the model's own].")] = None,
    steps: Annotated[int | None, typer.Option(help="Denoising steps.")] = None,
    guidance_scale: Annotated[float | None, typer.Option("--guidance-scale", help="Classifier-free guidance.")] = None,
    seed: Annotated[int | None, typer.Option(help="Same seed, same picture.")] = None,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt", help="What the picture should not show.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="ddim, dpm++, euler, euler_a, heun, pndm or unipc.")] = None,
    url: UrlOption = "http://127.0.0.1:8000",
    api_key: ApiKeyOption = None,
    tier: TierOption = None,
    tenant: TenantOption = None,
) -> None:
    """Generate pictures and write them; each file carries its provenance (model, seed, parameters)."""
    body = {
        "model": model, "prompt": prompt, "n": n, "size": size, "steps": steps, "guidance_scale": guidance_scale,
        "seed": seed, "negative_prompt": negative_prompt, "scheduler": scheduler, "response_format": "b64_json",
    }
    server = Server(url, api_key, tier, tenant)
    answer = server.call("POST", "/v1/images/generations", json={k: v for k, v in body.items() if v is not None})
    data = answer.json()["data"]
    for path, item in zip(_outputs(out, len(data)), data):
        png = base64.b64decode(item["b64_json"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        meta = read_provenance(png) or {}
        err.print(Text.assemble(("wrote ", "green"), str(path), f"  (model {meta.get('model')}, seed {meta.get('seed')})"))
