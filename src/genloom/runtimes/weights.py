"""What a checkpoint holds, read from its files' headers without loading a weight (for API
replicas that describe and check requests for models they never run), and `touch_weights`."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any


def count_parameters(path: Path) -> int:
    """Parameters in every .safetensors file under `path` (read from their JSON headers)."""
    total = 0
    for file in sorted(Path(path).rglob("*.safetensors")):
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total


def touch_weights(*modules: Any) -> None:
    """Read every weight once, right after loading. Weights come memory-mapped from their
    .safetensors files, and a page is only read in when first used: rows of a token embedding
    table are used as new tokens appear, so without this a server's RSS creeps up for hours
    (it did in the soak: 16 MiB in 150 s after warm-up, all in the embedding model's mapping)
    until the whole file is in. Read once, the pages stay file-backed (shared between processes
    on a host, reclaimable); RSS is then flat from the start."""
    import torch

    with torch.no_grad():
        for module in modules:
            for tensor in (*module.parameters(), *module.buffers()):
                if tensor.device.type == "cpu" and tensor.numel():
                    tensor.sum()
