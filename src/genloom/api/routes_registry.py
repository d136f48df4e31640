"""/v1/admin/models: versions, aliases, history and rollouts, for an admin key only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field, ValidationError

from genloom.api.callers import principal, require_admin
from genloom.api.errors import describe_invalid
from genloom.api.schemas import _Body
from genloom.config import ModelKind, ModelSettings
from genloom.gateway import InvalidRequest
from genloom.gateway.webhooks import WebhookTargetRefused, check_target
from genloom.registry import RegistryConflict, UnknownModel, version_key
from genloom.registry.registry import ModelRegistry
from genloom.registry.rollout import Gates, RolloutPlan, RolloutStrategy, StickyBy
from genloom.registry.rollouts import RolloutService
from genloom.registry.versions import ALIAS_RE, VERSION_RE

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$"


class ModelRegister(_Body):
    """A new version: a local directory (`path`) or a remote endpoint (`base_url`)."""

    name: str = Field(pattern=_NAME)
    kind: ModelKind = ModelKind.TEXT
    path: str | None = None
    base_url: str | None = None
    upstream_model: str | None = None
    api_key: str | None = None
    max_batch_size: int | None = None
    max_concurrency: int | None = None
    max_context: int | None = None
    tool_parser: str | None = None
    fallbacks: list[str] | None = None
    default_steps: int | None = None
    default_guidance_scale: float | None = None
    first_token_timeout_s: float | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    aliases: list[str] = Field(default_factory=list)


class AliasPut(_Body):
    version: str = Field(pattern=VERSION_RE.pattern)


# Defaults come from the rollout policy itself (registry/rollout.py), so the two cannot drift.
_GATES, _PLAN = Gates(), RolloutPlan()


class GatesBody(_Body):
    max_error_rate: float = Field(_GATES.max_error_rate, ge=0, le=1)
    max_p99_latency_ms: float | None = Field(_GATES.max_p99_latency_ms, gt=0)
    max_ttft_p99_ms: float | None = Field(_GATES.max_ttft_p99_ms, gt=0)
    max_latency_ratio: float | None = Field(_GATES.max_latency_ratio, gt=0)
    min_requests: int = Field(_GATES.min_requests, ge=1, le=100_000)
    window_s: float = Field(_GATES.window_s, gt=0, le=86_400)
    min_feedback_score: float | None = Field(_GATES.min_feedback_score, ge=0, le=1)
    min_feedback: int = Field(_GATES.min_feedback, ge=1, le=100_000)


class RolloutStart(_Body):
    strategy: RolloutStrategy
    candidate: str = Field(pattern=VERSION_RE.pattern)
    percent: float = Field(_PLAN.percent, gt=0, le=100)
    sticky_by: StickyBy = _PLAN.sticky_by
    steps: list[float] = Field(default_factory=list, max_length=20)
    step_after_requests: int = Field(_PLAN.step_after_requests, ge=1)
    auto_promote: bool = _PLAN.auto_promote
    gates: GatesBody = Field(default_factory=GatesBody)
    warmup_requests: int = Field(_PLAN.warmup_requests, ge=0, le=100)
    keep_previous_s: float = Field(_PLAN.keep_previous_s, ge=0, le=7 * 86_400)


class RolloutEnd(_Body):
    reason: str | None = Field(None, max_length=500)


def build_registry_router(
    registry: ModelRegistry, rollouts: RolloutService, *, upstream_allow_hosts: frozenset[str],
    loaded: Callable[[], Mapping[str, Any]], running: Callable[[], set[str]], work: Callable[[str], Awaitable[int]],
) -> APIRouter:
    """`loaded()`: the versions this process can check requests for; `running()`: those its own
    workers run now (weights loaded; empty on an API replica); `work(key)`: what waits for or runs
    on a version (a version with work is not retired)."""
    router = APIRouter(prefix="/v1/admin/models", dependencies=[Depends(require_admin)])

    @router.post("", status_code=201)
    async def register(body: ModelRegister, request: Request) -> JSONResponse:
        settings = _settings(body)
        if settings.kind is ModelKind.REMOTE:
            try:
                await check_target(str(settings.base_url), allow_hosts=upstream_allow_hosts, what="base_url",
                                   allow_setting="GENLOOM_UPSTREAM_ALLOW_HOSTS")
            except WebhookTargetRefused as e:
                raise InvalidRequest(str(e), param="base_url") from e
        for alias in body.aliases:
            _check_alias(alias)
        version = await registry.register(settings, metadata=body.metadata, actor=_actor(request), aliases=tuple(body.aliases))
        return JSONResponse(_version(registry, version), status_code=201)

    @router.get("")
    async def list_models() -> dict[str, Any]:
        versions = await registry.store.versions()
        here = (loaded(), running())
        return {"object": "list", "data": [_model(registry, name, versions, *here) for name in sorted({v.name for v in versions})]}

    @router.get("/{name}")
    async def get_model(name: str) -> dict[str, Any]:
        versions = await registry.store.versions(name)
        if not versions:
            raise UnknownModel(name, registry.catalog.names())
        return _model(registry, name, versions, loaded(), running())

    @router.get("/{name}/versions/{version}")
    async def get_version(name: str, version: str) -> dict[str, Any]:
        found = await registry.store.version(name, _number(version))
        return _version(registry, found) | {"loaded_here": found.key in loaded(), "running_here": found.key in running()}

    @router.delete("/{name}/versions/{version}")
    async def retire(name: str, version: str, request: Request) -> dict[str, Any]:
        waiting = await work(version_key(name, _number(version)))
        if waiting:
            raise RegistryConflict(
                f"{version_key(name, _number(version))} has {waiting} requests or jobs waiting or running; "
                "retire it once they are done (point its aliases elsewhere first)"
            )
        await registry.retire(name, _number(version), actor=_actor(request))
        return _version(registry, await registry.store.version(name, _number(version)))

    @router.put("/{name}/aliases/{alias}")
    async def set_alias(name: str, alias: str, body: AliasPut, request: Request) -> dict[str, Any]:
        _check_alias(alias)
        before = await registry.set_alias(name, alias, _number(body.version), actor=_actor(request))
        return {"object": "model.alias", "model": name, "alias": alias, "version": body.version,
                "previous": None if before is None else f"v{before}"}

    @router.get("/{name}/history")
    async def history(
        name: str, since: datetime | None = Query(None), until: datetime | None = Query(None),
        at: datetime | None = Query(None, description="also say which version each alias pointed at then"),
    ) -> dict[str, Any]:
        events = await registry.history(name, since=since, until=until)
        answer: dict[str, Any] = {"object": "list", "data": [e.public() for e in events]}
        if at is not None:
            answer["aliases_at"] = {"at": at.isoformat(), "aliases": await registry.served_at(name, at)}
        return answer

    @router.post("/{name}/rollouts", status_code=201)
    async def start_rollout(name: str, body: RolloutStart, request: Request) -> dict[str, Any]:
        try:  # the plan checks what the schema cannot (steps in range and in order)
            plan = RolloutPlan(**body.model_dump(exclude={"strategy", "candidate", "gates", "steps"}),
                               steps=tuple(body.steps), gates=Gates(**body.gates.model_dump()))
        except ValueError as e:
            raise InvalidRequest(str(e), param="steps") from e
        record = await rollouts.start(name, strategy=body.strategy, candidate=_number(body.candidate), plan=plan,
                                      actor=_actor(request))
        return record.public()

    @router.get("/{name}/rollouts")
    async def rollout_history(name: str) -> dict[str, Any]:
        return {"object": "list", "data": [r.public() for r in await rollouts.history(name)]}

    @router.get("/{name}/rollouts/current")
    async def current(name: str) -> dict[str, Any]:
        return (await rollouts.current(name)).public()

    @router.post("/{name}/rollouts/current/promote")
    async def promote(name: str, request: Request, body: RolloutEnd | None = None) -> dict[str, Any]:
        return (await rollouts.promote(name, actor=_actor(request), reason=body.reason if body else None)).public()

    @router.post("/{name}/rollouts/current/rollback")
    async def rollback(name: str, request: Request, body: RolloutEnd | None = None) -> dict[str, Any]:
        return (await rollouts.rollback(name, actor=_actor(request), reason=body.reason if body else None)).public()

    return router


def _settings(body: ModelRegister) -> ModelSettings:
    fields = body.model_dump(exclude={"metadata", "aliases"}, exclude_none=True)
    try:
        return ModelSettings.model_validate(fields)
    except ValidationError as e:
        error = e.errors()[0]
        param = ".".join(str(p) for p in error.get("loc", ())) or None
        message = describe_invalid(error, param) if param else str(error.get("msg", "invalid model")).removeprefix("Value error, ")
        raise InvalidRequest(message, param=param or ("path" if body.kind is not ModelKind.REMOTE else "base_url")) from e


def _check_alias(alias: str) -> None:
    if not ALIAS_RE.match(alias) or VERSION_RE.match(alias):
        raise InvalidRequest(f"alias '{alias}' must start with a letter, hold only letters, digits, _ and -, and not look like a version (v3)", param="alias")


def _number(version: str) -> int:
    match = VERSION_RE.match(version)
    if not match:
        raise InvalidRequest(f"'{version}' is not a version; versions are v1, v2, ...", param="version")
    return int(match.group(1))


def _actor(request: Request) -> str:
    who = principal(request)
    return f"key:{who.key_id}" if who.key_id else "admin"


def _aliases_of(registry: ModelRegistry, name: str, version: int) -> list[str]:
    return sorted(a for a, v in registry.catalog.aliases.get(name, {}).items() if v == version)


def _version(registry: ModelRegistry, version: Any) -> dict[str, Any]:
    return version.public(aliases=_aliases_of(registry, version.name, version.version))


def _model(registry: ModelRegistry, name: str, versions: list[Any], loaded: Mapping[str, Any], running: set[str]) -> dict[str, Any]:
    mine = [v for v in versions if v.name == name]
    rollout = registry.catalog.rollouts.get(name)
    return {
        "object": "model.entry", "id": name,
        "aliases": {a: version_key(name, v) for a, v in sorted(registry.catalog.aliases.get(name, {}).items())},
        "versions": [_version(registry, v) | {"loaded_here": v.key in loaded, "running_here": v.key in running} for v in mine],
        "rollout": rollout.public() if rollout is not None else None,
    }

