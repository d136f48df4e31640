"""The `genloom` command."""

from __future__ import annotations

import logging
import runpy
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from genloom.cli.models import models_app
from genloom.cli.datasets import datasets_app
from genloom.cli.fine_tune import fine_tune_app
from genloom.cli.workers import workers as workers_command
from genloom.cli.admin import keys_app, tenants_app
from genloom.cli.db import db_app
from genloom.cli.images import images_app
from genloom.cli.jobs import jobs_app
from genloom.config import ConfigError, Role, Settings, load_settings

app = typer.Typer(help="Genloom: generative models as a production service.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)
builtin_app = typer.Typer(help="Build the models that ship with Genloom.", no_args_is_help=True)
builtin_train_app = typer.Typer(help="Train a built-in model.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks (run from a source checkout).", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(builtin_app, name="builtin")
builtin_app.add_typer(builtin_train_app, name="train")
app.add_typer(bench_app, name="bench")
app.add_typer(jobs_app, name="jobs")
app.add_typer(images_app, name="images")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(fine_tune_app, name="fine-tune")
app.command("workers")(workers_command)

err = Console(stderr=True, soft_wrap=True)
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file (default: ./genloom.yaml if present).")]


def _settings(config: Path | None, **overrides) -> Settings:
    try:
        return load_settings(config, **overrides)
    except ConfigError as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from e


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [default: 8000].")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where the database and files live [default: ~/.genloom].")] = None,
    role: Annotated[
        Role | None,
        typer.Option(help="all: API and workers in this process; api: the API only, workers run as `genloom worker` (needs GENLOOM_REDIS_URL) [default: all]."),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Serve the OpenAI-compatible API with the configured (by default the built-in) models."""
    settings = _settings(config, **{"server.host": host, "server.port": port, "data_dir": data_dir, "server.role": role})
    log = _logging(settings)
    log.info("data dir %s", settings.resolved_data_dir())
    what = "API only, workers take from Redis" if settings.server.role is Role.API else "API and workers"
    raise typer.Exit(_run(settings, lambda url: log.info("listening on %s (OpenAI API under /v1; %s)", url, what)))


@app.command()
def worker(
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model names this worker runs [default: every served model].")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface for /healthz and /readyz [default: 127.0.0.1].")] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Port for /healthz and /readyz [default: server.port, 8000]; 0 picks a free port (logged, and shown by `genloom workers`)."),
    ] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Where files live [default: ~/.genloom].")] = None,
    config: ConfigOption = None,
) -> None:
    """Run models for the API replicas: take work from the shared Redis queue (GENLOOM_REDIS_URL),
    store async results in the database (GENLOOM_DATABASE_URL). SIGTERM drains: the batch running
    finishes, queued work stays for other workers; SIGKILL loses nothing (leases expire)."""
    settings = _settings(config, **{"server.host": host, "server.port": port, "data_dir": data_dir})
    if not settings.redis_url:
        err.print("[bold red]error:[/] a worker takes its work from Redis: set GENLOOM_REDIS_URL (and GENLOOM_DATABASE_URL)")
        raise typer.Exit(2)
    served = [m.name for m in settings.served_models()] + ["all-minilm-l6-v2"]
    chosen = [name.strip() for name in models.split(",") if name.strip()] if models else None
    unknown = sorted(set(chosen or ()) - set(served))
    if unknown:
        err.print(f"[bold red]error:[/] not a served model: {', '.join(unknown)} (served: {', '.join(served)})")
        raise typer.Exit(2)
    log = _logging(settings)
    from genloom.server import Process

    def listening(url: str) -> None:
        log.info("worker for %s; health on %s", ", ".join(chosen or served), url)

    raise typer.Exit(_run(settings, listening, process=Process.WORKER, worker_models=chosen))


def _run(settings: Settings, on_listening, **role) -> int:
    """Run the server; a port in use or a database or Redis that does not answer is one line
    and exit code 2, before any model loads."""
    from genloom.server import StartupError, run

    try:
        return run(settings, on_listening=on_listening, **role)
    except StartupError as e:
        err.print(f"[bold red]error:[/] {e}")
        return 2


def _logging(settings: Settings) -> logging.Logger:
    from genloom.config.settings import LogFormat, secret_values
    from genloom.telemetry.logs import configure_logging

    configure_logging(
        level=settings.server.log_level, json_lines=settings.logging.format is LogFormat.JSON, secrets=secret_values(settings),
    )
    return logging.getLogger("genloom")


@config_app.command("show")
def config_show(config: ConfigOption = None) -> None:
    """Print the effective configuration (defaults, file, environment) as YAML."""
    settings = _settings(config)
    data = settings.model_dump(mode="json")
    data["served_models"] = [m.model_dump(mode="json") for m in settings.served_models()]
    typer.echo(yaml.safe_dump(data, sort_keys=False))


@builtin_train_app.command("text")
def train_text(
    out: Annotated[Path | None, typer.Option(help="Where to write the HF checkpoint [default: the package's built-in dir].")] = None,
    work_dir: Annotated[Path, typer.Option(help="Checkpoints to resume from.")] = Path("runs/text"),
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Train genloom-text-mini on Python's own documentation (resumes from --work-dir)."""
    from genloom.builtin.text_model import MODEL_NAME, TextModelConfig, train
    from genloom.config.settings import BUILTIN_MODELS_DIR

    cfg = TextModelConfig()
    if steps is not None:
        cfg.steps = steps
    if seed is not None:
        cfg.seed = seed
    metrics = train(cfg, work_dir, out or BUILTIN_MODELS_DIR / MODEL_NAME, console=err)
    typer.echo(yaml.safe_dump({k: v for k, v in metrics.items() if k != "config"}, sort_keys=False))


@builtin_train_app.command("image")
def train_image(
    out: Annotated[Path | None, typer.Option(help="Where to write the diffusers pipeline [default: the package's built-in dir].")] = None,
    work_dir: Annotated[Path, typer.Option(help="Checkpoints to resume from.")] = Path("runs/image"),
    steps: Annotated[int | None, typer.Option(help="UNet training steps.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
) -> None:
    """Train genloom-image-mini on captioned pictures of shapes (resumes from --work-dir), then grade 200 generations."""
    from genloom.builtin.image_model import MODEL_NAME, ImageModelConfig, train
    from genloom.config.settings import BUILTIN_MODELS_DIR

    cfg = ImageModelConfig()
    if steps is not None:
        cfg.unet_steps = steps
    if seed is not None:
        cfg.seed = seed
    metrics = train(cfg, work_dir, out or BUILTIN_MODELS_DIR / MODEL_NAME, console=err)
    typer.echo(yaml.safe_dump({k: v for k, v in metrics.items() if k != "config"}, sort_keys=False))


def _run_bench(name: str, args: list[str]) -> None:
    """Run bench/<name>_bench.py's main(args) from a source checkout; its return is the exit code."""
    script = Path(f"bench/{name}_bench.py")
    if not script.is_file():
        err.print(f"[bold red]error:[/] run benchmarks from the root of a Genloom source checkout ({script})")
        raise typer.Exit(2)
    module = runpy.run_path(str(script), run_name=f"genloom_bench_{name}")
    raise typer.Exit(module["main"](args))


def _bench_command(name: str, help: str, script: str | None = None) -> None:
    """`genloom bench <name> [ARGS...]` runs bench/<script or name>_bench.py: the script's own options pass through untouched."""

    def command(ctx: typer.Context) -> None:
        _run_bench(script or name, list(ctx.args))

    command.__doc__ = help
    bench_app.command(name, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(command)


for _name, _help in (
    ('jobs', 'Scheduling under overload and job-queue throughput (bench/jobs_bench.py --help).'),
    ('queue', "The Redis queue's throughput against Celery on the same Redis (bench/queue_bench.py --help)."),
    ('gateway', "Gateway overhead on a remote model against LiteLLM's proxy (bench/gateway_bench.py --help)."),
    ('rollout', "What a running canary rollout adds to the gateway's latency (bench/rollout_bench.py --help)."),
    ('text', 'Text tokens/s and TTFT against transformers serve and static batches (bench/text_bench.py --help).'),
    ('image', "Images/s batched against one-at-a-time diffusers, and the built-in's accuracy (bench/image_bench.py --help)."),
    ('structured', 'Tokens/s of a batch with none, half and all rows under a JSON-schema grammar (bench/structured_bench.py --help).'),
    ('telemetry', 'Gateway throughput with metrics and tracing on against off (bench/telemetry_bench.py --help).'),
    ('soak', 'RSS, fds, threads, database and Redis size under steady mixed traffic for N minutes (bench/soak_bench.py --help).'),
    ('console', "The web console's page load times with 10,000 jobs in the store, in Chromium (bench/console_bench.py --help)."),
):
    _bench_command(_name, _help)
_bench_command('fine-tune', 'LoRA fine-tuning speed and effect on the built-in text model (bench/fine_tune_bench.py --help).',
               script='fine_tune')
_bench_command('multi-lora', 'Tokens/s of a batch with many LoRA adapters mixed, against base only and PEFT (bench/multi_lora_bench.py --help).',
               script='multi_lora')
_bench_command('guards', 'Gateway throughput with input and output guardrails on against off (bench/guard_cost_bench.py --help).',
               script='guard_cost')
