"""How long to wait before trying again: for job retries and webhook deliveries alike."""

from __future__ import annotations

import random


def retry_delay(attempt: int, *, base_s: float, max_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(max_s, base_s * 2**(attempt - 1))]."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    # Past 2**62 the cap has long won; bounding the exponent keeps the float finite.
    ceiling = min(max_s, base_s * 2 ** min(attempt - 1, 62))
    return rng.uniform(0, ceiling)
