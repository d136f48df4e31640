"""Prompt templates and scenarios. /v1/admin/templates and /v1/admin/scenarios (admin keys) create
versions and pick a scenario's active one; /v1/scenarios/{name}/run (any key) runs a scenario as
a chat completion, and /v1/templates/{name}/render shows what a template would send."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from genloom.api.callers import caller, require_admin
from genloom.api.routes_text import chat_request, stream_response
from genloom.api.schemas import ChatCompletionRequest, StreamOptions, _Body
from genloom.config import ApiSettings
from genloom.gateway.openai_shapes import ChatChunks, completion_body
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.pipeline.guard import restore_body
from genloom.gateway.templates import PARAMETERS, ScenarioCall, TemplateService
from genloom.guardrails.policy import layered
from genloom.store.templates import ScenarioVersion, TemplateVersion


MAX_VERSION = 2**31 - 1  # versions are INTEGER columns: larger numbers cannot name one, and PostgreSQL refuses them
VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]

class TemplateCreate(_Body):
    """Shapes only; the gateway checks names, roles, Jinja2 and variable declarations."""

    name: str
    description: str | None = Field(None, max_length=2000)
    messages: list[dict[str, Any]]
    variables: dict[str, dict[str, Any]] = Field(default_factory=dict)
    model: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)


class TemplateRef(_Body):
    name: str
    version: int | None = Field(None, ge=1, le=MAX_VERSION, description="the template's newest version (pinned now) when left out")


class ScenarioCreate(_Body):
    name: str
    description: str | None = Field(None, max_length=2000)
    template: TemplateRef
    model: str | None = None
    policy: dict[str, Any] = Field(default_factory=dict)


class ScenarioActivate(_Body):
    version: int = Field(ge=1, le=MAX_VERSION)


class TemplateRender(_Body):
    variables: dict[str, Any] = Field(default_factory=dict)
    version: int | None = Field(None, ge=1, le=MAX_VERSION)


class ScenarioRun(_Body):
    """The sampling fields are checked by the gateway against the scenario's policy."""

    variables: dict[str, Any] = Field(default_factory=dict)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    max_tokens: Any = None
    temperature: Any = None
    top_p: Any = None
    stop: Any = None
    seed: Any = None

    def overrides(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in PARAMETERS if getattr(self, key) is not None}


def build_templates_router(templates: TemplateService, pipeline: TextPipeline, settings: ApiSettings) -> APIRouter:
    router = APIRouter(prefix="/v1")
    admin = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])

    @admin.post("/templates", status_code=201)
    async def create_template(body: TemplateCreate) -> dict[str, Any]:
        return _template(await templates.create_template(
            name=body.name, messages=body.messages, variables=body.variables, model=body.model,
            parameters=body.parameters, description=body.description,
        ))

    @admin.get("/templates")
    async def list_templates() -> dict[str, Any]:
        return {"object": "list", "data": [_template(t) for t in await templates.templates()]}

    @admin.get("/templates/{name}")
    async def get_template(name: str) -> dict[str, Any]:
        versions = await templates.template_versions(name)
        return {"object": "template", "name": name, "latest_version": versions[-1].version,
                "versions": [_template(t) for t in versions]}

    @admin.get("/templates/{name}/versions/{version}")
    async def get_template_version(name: str, version: VersionNumber) -> dict[str, Any]:
        return _template(await templates.template(name, version))

    @admin.post("/scenarios", status_code=201)
    async def create_scenario(body: ScenarioCreate) -> dict[str, Any]:
        return _scenario(await templates.create_scenario(
            name=body.name, template=body.template.name, template_version=body.template.version, model=body.model,
            policy=body.policy, description=body.description,
        ))

    @admin.get("/scenarios")
    async def list_scenarios() -> dict[str, Any]:
        return {"object": "list", "data": [_scenario(s) for s in await templates.scenarios()]}

    @admin.get("/scenarios/{name}")
    async def get_scenario(name: str) -> dict[str, Any]:
        versions = await templates.scenario_versions(name)
        return {"object": "scenario", "name": name, "active_version": versions[0].active_version,
                "latest_version": versions[-1].version, "versions": [_scenario(s) for s in versions]}

    @admin.get("/scenarios/{name}/versions/{version}")
    async def get_scenario_version(name: str, version: VersionNumber) -> dict[str, Any]:
        return _scenario(await templates.scenario(name, version))

    @admin.post("/scenarios/{name}/activate")
    async def activate_scenario(name: str, body: ScenarioActivate) -> dict[str, Any]:
        return _scenario(await templates.activate_scenario(name, body.version))

    @admin.post("/scenarios/{name}/rollback")
    async def rollback_scenario(name: str) -> dict[str, Any]:
        return _scenario(await templates.rollback_scenario(name))

    @router.post("/templates/{name}/render")
    async def render_template(name: str, body: TemplateRender) -> dict[str, Any]:
        rendered = await templates.render(name, body.variables, body.version)
        t = rendered.template
        return {"object": "template.render", "template": {"name": t.name, "version": t.version}, "model": t.model,
                "parameters": t.parameters, "messages": rendered.messages}

    @router.post("/scenarios/{name}/run")
    async def run_scenario(name: str, body: ScenarioRun, request: Request) -> Response:
        call = await templates.prepare_call(name, body.variables, body.overrides())
        chat = ChatCompletionRequest(
            model=call.model, messages=call.messages, stream=body.stream, stream_options=body.stream_options,
            user=body.user, **call.parameters,
        )
        who = caller(request)
        text_request = chat_request(chat, settings, who)
        if call.scenario.policy.get("guardrails"):
            text_request = replace(text_request, guardrails=layered(who.guardrails, call.scenario.policy["guardrails"]))
        headers = _call_headers(call)
        if body.stream:
            response = await stream_response(pipeline, text_request, request, ChatChunks(chat.include_usage))
            response.headers.update(headers)
            return response
        completion = await pipeline.complete(text_request, request.is_disconnected)
        answer = restore_body(completion_body(completion, text_request.endpoint), completion.restore)
        answer |= {"scenario": _called(call)}
        return JSONResponse(answer, headers=completion.rate_limit_headers | completion.guard_headers | headers)

    router.include_router(admin)
    return router


def _call_headers(call: ScenarioCall) -> dict[str, str]:
    """Which versions answered, also for a stream (whose chunks have no room for it)."""
    return {"X-Genloom-Scenario": f"{call.scenario.name}/{call.scenario.version}",
            "X-Genloom-Template": f"{call.template.name}/{call.template.version}"}


def _called(call: ScenarioCall) -> dict[str, Any]:
    return {"name": call.scenario.name, "version": call.scenario.version,
            "template": {"name": call.template.name, "version": call.template.version}}


def _unix(at: datetime) -> int:
    return int(at.timestamp())


def _template(t: TemplateVersion) -> dict[str, Any]:
    return {"object": "template.version", "name": t.name, "version": t.version, "description": t.description,
            "messages": t.messages, "variables": t.variables, "model": t.model, "parameters": t.parameters,
            "created_at": _unix(t.created_at)}


def _scenario(s: ScenarioVersion) -> dict[str, Any]:
    return {"object": "scenario.version", "name": s.name, "version": s.version, "description": s.description,
            "template": {"name": s.template, "version": s.template_version}, "model": s.model, "policy": s.policy,
            "active": s.active, "created_at": _unix(s.created_at)}
