"""`genloom serve` in a subprocess for a benchmark: its config written out, its output to a log,
ready before the caller goes on, and always stopped (SIGTERM, then SIGKILL after a minute)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from text_bench import free_port, wait_ready


@contextmanager
def serving(config: dict, root: Path, name: str = "serve", ready_timeout_s: float = 300) -> Iterator[str]:
    """The server's base URL while the block runs; `root` holds its config and log."""
    config_path, log_path, port = root / f"{name}.yaml", root / f"{name}.log", free_port()
    config_path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "genloom.cli", "serve", "--config", str(config_path), "--port", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
        try:
            base_url = f"http://127.0.0.1:{port}"
            wait_ready(proc, base_url + "/readyz", log_path, timeout_s=ready_timeout_s)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
