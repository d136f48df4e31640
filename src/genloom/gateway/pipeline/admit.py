"""Stage 4, admit: charge the caller's rate limits and quotas with the most the request can use
(429 when over), and settle on what it really used when it ends."""

from __future__ import annotations

from genloom.gateway.rate_limit import Admission, Limits, RateLimiter
from genloom.gateway.text_service import PreparedText, TextRequest


class Admit:
    name = "admit"

    def __init__(self, *, limiter: RateLimiter | None) -> None:
        self._limiter = limiter

    async def charge(self, request: TextRequest, prepared: PreparedText) -> Admission | None:
        if self._limiter is None:
            return None
        estimate = (prepared.prompt_tokens + prepared.params.max_tokens) * request.n
        return await self._limiter.check(
            key_id=request.key_id or f"tenant:{request.tenant}", tenant_id=request.tenant,
            key_limits=Limits.of(request.key_limits), tenant_limits=Limits.of(request.limits), tokens=estimate,
        )

    async def settle(self, admission: Admission | None, *, tokens_used: int) -> None:
        if admission is not None and self._limiter is not None:
            await self._limiter.settle(admission, tokens_used=tokens_used)
