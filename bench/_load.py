"""Client load for the text benchmark: C concurrent streaming chat clients against one server.

Each client sends requests back to back until the level's total is done; every request's raw
outcome is kept so that tokens can be counted the same way for every server afterwards.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import httpx


@dataclass
class RequestResult:
    prompt: str
    latency_s: float
    ttft_s: float | None = None
    content: str = ""
    usage_tokens: int | None = None
    error: str | None = None


@dataclass
class LevelResult:
    clients: int
    total: int
    wall_s: float
    requests: list[RequestResult] = field(default_factory=list)
    timed_out: bool = False

    @property
    def done(self) -> list[RequestResult]:
        return [r for r in self.requests if r.error is None]

    @property
    def errors(self) -> int:
        """Failed requests plus those a level timeout left unfinished."""
        return self.total - len(self.done)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks, as numpy's default does."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


async def stream_chat(client: httpx.AsyncClient, url: str, model: str, prompt: str, max_tokens: int) -> RequestResult:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    result = RequestResult(prompt=prompt, latency_s=0.0)
    parts: list[str] = []
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                result.error = f"HTTP {response.status_code}: {text[:200]}"
            else:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[len("data:") :].strip()
                    if payload == "[DONE]":
                        break
                    chunk = json.loads(payload)
                    if "error" in chunk:
                        result.error = str(chunk["error"])[:200]
                        break
                    for choice in chunk.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            if result.ttft_s is None:
                                result.ttft_s = time.perf_counter() - start
                            parts.append(text)
                    if chunk.get("usage"):
                        result.usage_tokens = chunk["usage"].get("completion_tokens")
    except (httpx.HTTPError, json.JSONDecodeError) as e:
        result.error = f"{type(e).__name__}: {e}"[:200]
    result.latency_s = time.perf_counter() - start
    result.content = "".join(parts)
    return result


async def run_level(
    *, base_url: str, model: str, prompts: list[str], clients: int, total: int, max_tokens: int, timeout_s: float
) -> LevelResult:
    """`clients` workers share one counter of `total` requests; prompts are cycled in order."""
    url = f"{base_url}/v1/chat/completions"
    level = LevelResult(clients=clients, total=total, wall_s=0.0)
    next_index = 0

    async def client_loop(client: httpx.AsyncClient) -> None:
        nonlocal next_index
        while next_index < total:
            i = next_index
            next_index += 1
            level.requests.append(await stream_chat(client, url, model, prompts[i % len(prompts)], max_tokens))

    limits = httpx.Limits(max_connections=clients + 1, max_keepalive_connections=clients + 1)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), limits=limits, trust_env=False) as client:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(client_loop(client) for _ in range(clients))), timeout_s)
        except TimeoutError:
            level.timed_out = True
        level.wall_s = time.perf_counter() - start
    return level


async def run_levels(
    *, base_url: str, model: str, prompts: list[str], levels: list[int], min_requests: int,
    per_client: int, max_tokens: int, timeout_s: float,
) -> list[LevelResult]:
    """One short warm-up request, then every concurrency level in order."""
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), trust_env=False) as client:
        warm = await stream_chat(client, f"{base_url}/v1/chat/completions", model, prompts[0], 8)
    if warm.error:
        raise RuntimeError(f"warm-up request failed: {warm.error}")
    results = []
    for clients in levels:
        total = max(per_client * clients, min_requests)
        results.append(await run_level(
            base_url=base_url, model=model, prompts=prompts, clients=clients, total=total,
            max_tokens=max_tokens, timeout_s=timeout_s,
        ))
    return results
