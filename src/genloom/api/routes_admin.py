"""/v1/admin: tenants and API keys, for an admin key only."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ConfigDict, Field

from genloom.api.callers import principal, require_admin
from genloom.api.schemas import _Body
from genloom.gateway.auth import Scope, TenantAdmin
from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.errors import InvalidRequest, ModelNotFound
from genloom.gateway.feedback import FeedbackService
from genloom.gateway.job_service import JobService
from genloom.jobs import Tier
from genloom.guardrails.policy import Policies
from genloom.store.guard_audit import AuditEntry, GuardAudit
from genloom.store.tenants import ApiKey, Tenant
from genloom.telemetry.monitors import Monitors


class ReferenceBody(_Body):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    from_: Literal["next", "current"] = Field("next", alias="from")


class TenantLimits(_Body):
    """None (or absent) is unlimited."""

    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    tokens_per_day: int | None = Field(None, gt=0)
    images_per_day: int | None = Field(None, gt=0)
    guard_blocks_per_hour: int | None = Field(None, gt=0)  # then every request gets 429 until the hour ends


class TenantCreate(_Body):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
    tier: Tier = Tier.FREE
    limits: TenantLimits = Field(default_factory=TenantLimits)
    guardrails: dict[str, Any] | None = None  # guard policy overrides: {"input": {"pii": {"action": "redact"}}}
    keep_content: bool = True  # False: the request log keeps no prompts or answers; feedback only what it is sent


class TenantUpdate(_Body):
    tier: Tier | None = None
    limits: TenantLimits | None = None
    guardrails: dict[str, Any] | None = None  # replaces the tenant's overrides ({} clears them)
    keep_content: bool | None = None


class KeyCreate(_Body):
    name: str = Field("key", min_length=1, max_length=128)
    scope: Scope = Scope.TENANT
    limits: TenantLimits = Field(default_factory=TenantLimits)  # this key's own, beside its tenant's
    expires_in_days: float | None = Field(None, gt=0, le=3650)


def build_admin_router(
    admin: TenantAdmin, breakers: Mapping[str, CircuitBreaker], jobs: JobService, *,
    list_workers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None, monitors: Monitors | None = None,
    policies: Policies | None = None, audit: GuardAudit | None = None, feedback: FeedbackService | None = None,
) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)])

    def monitored() -> Monitors:
        if monitors is None:
            raise InvalidRequest("monitors are off on this server (monitors.enabled: false)", param=None)
        return monitors

    @router.get("/monitors")
    async def monitor_list() -> dict[str, Any]:
        """Quality and drift of every model this replica has answered for."""
        m = monitored()
        return {"object": "list", "data": [r for model in m.models() if (r := m.report(model)) is not None]}

    @router.get("/monitors/{model}")
    async def monitor(model: str) -> dict[str, Any]:
        """One model's drift (`score`: MMD² of prompt embeddings against the reference window,
        `p_value`, `threshold`, `alert`, `reference_n`, `current_n`) and quality per version."""
        report = monitored().report(model)
        if report is None:
            raise ModelNotFound(model, monitored().models())
        return report

    @router.post("/monitors/{model}/reference")
    async def monitor_reference(model: str, body: ReferenceBody) -> dict[str, Any]:
        """Start a new drift reference: the next `reference_n` prompts (`from: "next"`, e.g. after
        a promotion), or the current window pinned as it is (`from: "current"`)."""
        monitored().reset_reference(model, pin_current=body.from_ == "current")
        return monitored().report(model) or {"model": model, "drift": None, "quality": {}}

    @router.get("/workers")
    async def workers() -> dict[str, Any]:
        """Every worker process: host, pid, version, state (`lost` once its heartbeats stop), its
        last heartbeat, and per model its state, capacity and occupancy."""
        return {"object": "list", "data": await list_workers() if list_workers is not None else []}

    @router.get("/queue")
    async def queue() -> dict[str, Any]:
        """The queue as every replica sees it: backend, waiting requests and jobs per model and
        class, dead letters (ids of jobs handed out `queue.max_deliveries` times unfinished)."""
        return {"object": "queue", **await asyncio.to_thread(jobs.queue_status)}

    @router.get("/queue/events", include_in_schema=False)  # a stream until the client leaves: not for fuzzers
    async def queue_events(request: Request, every_s: float = Query(1.0, ge=0.2, le=60),
                           max_s: float = Query(300.0, gt=0, le=3600)) -> StreamingResponse:
        """Server-sent events: the queue (as GET /queue) and every worker's models (as GET
        /workers) every `every_s` seconds, until the client goes away or `max_s` has passed (then
        `data: [DONE]`: a client reconnects, and its key is checked again)."""
        async def body() -> AsyncIterator[str]:
            ends = time.monotonic() + max_s
            try:
                while time.monotonic() < ends and not await request.is_disconnected():
                    snapshot = {"type": "queue", "at": round(time.time(), 3), **await asyncio.to_thread(jobs.queue_status),
                                "workers": await list_workers() if list_workers is not None else []}
                    yield f"data: {json.dumps(snapshot, separators=(',', ':'))}\n\n"
                    await asyncio.sleep(every_s)
            except Exception as e:  # the queue's Redis away: said in OpenAI's shape, then the stream ends
                error = {"message": f"the queue cannot be read now: {type(e).__name__}", "type": "server_error",
                         "param": None, "code": "queue_unavailable"}
                yield f"data: {json.dumps({'error': error})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/feedback/queue")
    async def review_queue(request: Request, model: str | None = Query(None, max_length=255),
                           tenant: str | None = Query(None, max_length=128), limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
        """A tenant's newest answers not rated yet, newest first, with what was asked and answered
        (admin keys only: it shows every end user's requests; default the key's own tenant). A
        reviewer rates or corrects them with POST /v1/feedback as that tenant."""
        if feedback is None:
            return {"object": "list", "data": []}
        entries = await feedback.to_review(tenant=tenant or principal(request).tenant_id, model=model, limit=limit)
        return {"object": "list", "data": [{
            "object": "feedback.candidate", "response_id": e.id, "tenant": e.tenant, "model": e.model, "version": e.version,
            "endpoint": e.endpoint, "prompt": e.prompt, "output": e.output, "user": e.user,
            "created_at": int(e.created_at.timestamp()),
        } for e in entries]}

    @router.get("/upstreams")
    async def upstreams() -> dict[str, Any]:
        """The health of every remote model, as its circuit breaker sees it."""
        data = []
        for name, breaker in sorted(breakers.items()):
            snap, now = breaker.snapshot(), time.monotonic()  # breakers run on the monotonic clock
            data.append({
                "model": name, "state": snap.state.value, "failures_in_window": snap.failures_in_window,
                "open_for_s": None if snap.opened_at is None else round(now - snap.opened_at, 3),
                "next_probe_in_s": None if snap.next_probe_at is None else round(max(0.0, snap.next_probe_at - now), 3),
            })
        return {"object": "list", "data": data}

    @router.post("/tenants", status_code=201)
    async def create_tenant(body: TenantCreate) -> dict[str, Any]:
        tenant = await admin.create_tenant(name=body.name, tier=body.tier, limits=_limits(body.limits),
                                           guardrails=checked_guardrails(body.guardrails), keep_content=body.keep_content)
        return _tenant(tenant)

    @router.get("/tenants")
    async def list_tenants() -> dict[str, Any]:
        return {"object": "list", "data": [_tenant(t) for t in await admin.list_tenants()]}

    @router.get("/tenants/{tenant_id}")
    async def get_tenant(tenant_id: str) -> dict[str, Any]:
        return _tenant(await admin.get_tenant(tenant_id))

    @router.patch("/tenants/{tenant_id}")
    async def update_tenant(tenant_id: str, body: TenantUpdate) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if body.tier is not None:
            changes["tier"] = body.tier.value
        if body.limits is not None:
            changes["limits"] = _limits(body.limits)
        if body.guardrails is not None:
            changes["guardrails"] = checked_guardrails(body.guardrails)
        if body.keep_content is not None:
            changes["keep_content"] = body.keep_content
        return _tenant(await admin.update_tenant(tenant_id, **changes))

    def checked_guardrails(given: dict[str, Any] | None) -> dict[str, Any]:
        if not given:
            return {}
        if policies is None:
            raise InvalidRequest("guardrails cannot be set on this server", "guardrails")
        return policies.check_overrides(given, "guardrails")

    @router.get("/audit")
    async def audit_log(
        tenant: str | None = None, scanner: str | None = None, action: Literal["flag", "redact", "block"] | None = None,
        after: int | None = Query(None, ge=0), limit: int = Query(100, ge=1, le=1000),
    ) -> dict[str, Any]:
        """The guards' flags, blocks and redactions, newest first; `after` (an id) pages on."""
        if audit is None:
            return {"object": "list", "data": [], "has_more": False}
        entries = await audit.list(tenant=tenant, scanner=scanner, action=action, after=after, limit=limit + 1)
        page = entries[:limit]
        return {"object": "list", "data": [_audit_entry(e) for e in page], "has_more": len(entries) > limit,
                "last_id": page[-1].id if page else None}

    @router.post("/tenants/{tenant_id}/keys", status_code=201)
    async def create_key(tenant_id: str, body: KeyCreate) -> JSONResponse:
        expires = datetime.now(UTC) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
        key, secret = await admin.create_key(
            tenant_id, name=body.name, scope=body.scope, expires_at=expires, limits=_limits(body.limits)
        )
        # The key itself appears in this answer only; it is stored as a hash.
        return JSONResponse(_key(key) | {"key": secret}, status_code=201, headers={"Cache-Control": "no-store"})

    @router.get("/tenants/{tenant_id}/keys")
    async def list_keys(tenant_id: str) -> dict[str, Any]:
        return {"object": "list", "data": [_key(k) for k in await admin.list_keys(tenant_id)]}

    @router.delete("/keys/{key_id}")
    async def revoke_key(key_id: str) -> dict[str, Any]:
        return _key(await admin.revoke_key(key_id))

    return router


def _limits(limits: TenantLimits) -> dict[str, int]:
    return {name: value for name, value in limits.model_dump().items() if value is not None}


def _unix(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp())


def _tenant(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "object": "tenant", "name": t.name, "tier": t.tier, "limits": t.limits,
            "guardrails": t.guardrails, "keep_content": t.keep_content, "created_at": _unix(t.created_at), "updated_at": _unix(t.updated_at)}


def _audit_entry(e: AuditEntry) -> dict[str, Any]:
    entry = {"id": e.id, "object": "guard.audit_entry", "created_at": _unix(e.created_at), "request_id": e.request_id,
             "tenant": e.tenant, "stage": e.stage, "scanner": e.scanner, "category": e.category, "score": e.score,
             "action": e.action, "spans": e.spans}
    if e.content is not None:
        entry["content"] = e.content
    return entry


def _key(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "object": "api_key", "tenant_id": k.tenant_id, "name": k.name, "prefix": k.prefix,
            "scope": k.scope, "limits": k.limits, "created_at": _unix(k.created_at), "expires_at": _unix(k.expires_at),
            "revoked_at": _unix(k.revoked_at)}
