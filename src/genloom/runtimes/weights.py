"""What a checkpoint holds, read from its files' headers without loading a weight: for API
replicas that describe and check requests for models they never run."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path


def count_parameters(path: Path) -> int:
    """Parameters in every .safetensors file under `path` (read from their JSON headers)."""
    total = 0
    for file in sorted(Path(path).rglob("*.safetensors")):
        with open(file, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        total += sum(math.prod(t["shape"]) for name, t in header.items() if name != "__metadata__")
    return total
