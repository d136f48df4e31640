"""Prompt templates and scenarios: checking and rendering (pure functions), and the service that
stores them and prepares a scenario's call.

A template version's message contents are Jinja2, rendered in an immutable sandbox with
StrictUndefined: no attribute tricks, no mutation, no silently empty output. Variables are
declared with a type and checked before rendering; what a caller passes is data, never template
source. A scenario pins a template version, a model and a parameter policy; calling a scenario
by name uses its active version."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from typing import Any

import jinja2
from jinja2 import StrictUndefined, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from genloom.gateway.errors import InvalidRequest
from genloom.store.templates import (
    ScenarioNotFound,
    ScenarioVersion,
    TemplateNotFound,
    TemplateStore,
    TemplateVersion,
)

__all__ = [
    "PARAMETERS", "ROLES", "Rendered", "ScenarioCall", "ScenarioNotFound", "TemplateError", "TemplateNotFound",
    "TemplateService", "VariableType", "check_parameters", "check_policy", "check_template", "render", "run_parameters",
]

ROLES = ("system", "developer", "user", "assistant")
PARAMETERS = ("max_tokens", "temperature", "top_p", "stop", "seed")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,127}$")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_VARIABLE_FIELDS = ("type", "required", "default", "description")
_POLICY_FIELDS = ("parameters", "max_tokens_cap", "allow_overrides", "guardrails")
_MAX_REPEAT = 100_000  # the longest string or list `*` may build
_MAX_POWER_BITS = 4096  # the largest integer `**` may build


class TemplateError(InvalidRequest):
    """A template, scenario or set of variables that cannot be used as given (400); `param` names
    the variable or field to fix."""


class VariableType(str, Enum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    LIST = "list"

    def accepts(self, value: Any) -> bool:
        if self is VariableType.STRING:
            return isinstance(value, str)
        if self is VariableType.INTEGER:
            return _is_int(value)
        if self is VariableType.NUMBER:
            return _is_number(value)
        if self is VariableType.BOOLEAN:
            return isinstance(value, bool)
        return isinstance(value, list)

    @property
    def described(self) -> str:
        return "an integer" if self is VariableType.INTEGER else f"a {self.value}"


class _Sandbox(ImmutableSandboxedEnvironment):
    """Also bounds `*` and `**`, which would otherwise let a caller's number build gigabytes."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and _is_int(times) and len(sequence) * times > _MAX_REPEAT:
                    raise SecurityError(f"'*' would build a sequence longer than {_MAX_REPEAT}")
        if operator == "**" and _is_int(left) and _is_int(right) and left.bit_length() * right > _MAX_POWER_BITS:
            raise SecurityError(f"'**' would build an integer of more than {_MAX_POWER_BITS} bits")
        return super().call_binop(context, operator, left, right)


_ENV = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


def check_template(
    *, name: str, messages: Any, variables: Any, parameters: Any
) -> tuple[list[dict[str, str]], dict[str, dict[str, Any]], dict[str, Any]]:
    """A new template version's messages, variables and parameters as they will be stored:
    names checked, every content compiled, every variable it uses declared."""
    _check_name("template", name)
    declared = _check_variables(name, variables)
    return _check_messages(name, messages, set(declared)), declared, check_parameters(parameters)


def render(template: TemplateVersion, variables: Any) -> list[dict[str, str]]:
    """The template's messages with `variables` filled in. Optional variables left out take their
    default, or None when they have none (test them with `{% if name %}`)."""
    label = f"template '{template.name}' v{template.version}"
    if not isinstance(variables, dict):
        raise TemplateError(f"variables must be an object of name to value, got {_shown(variables)}", "variables")
    for name in variables:
        if name not in template.variables:
            declared = ", ".join(template.variables) or "none"
            raise TemplateError(f"{label} declares no variable '{name}'; its variables are: {declared}", name)
    values: dict[str, Any] = {}
    for name, spec in template.variables.items():
        if name not in variables:
            if spec["required"]:
                raise TemplateError(f"missing required variable '{name}' for {label}", name)
            values[name] = spec["default"]
            continue
        kind = VariableType(spec["type"])
        if not kind.accepts(variables[name]):
            raise TemplateError(
                f"variable '{name}' must be {kind.described}, got {_shown(variables[name])} ({label})", name
            )
        values[name] = variables[name]
    rendered = []
    for i, message in enumerate(template.messages):
        try:
            content = _compiled(message["content"]).render(values)
        except SecurityError as e:
            raise TemplateError(f"{label} messages.{i} tried something the sandbox forbids: {e}", "variables") from e
        except Exception as e:  # the template's own logic failed on these values (a bad filter input, 1/0, ...)
            raise TemplateError(
                f"{label} messages.{i} could not be rendered with these variables: {type(e).__name__}: {e}", "variables"
            ) from e
        rendered.append({"role": message["role"], "content": content})
    return rendered


def check_parameters(parameters: Any, where: str = "parameters") -> dict[str, Any]:
    """Sampling defaults a template or scenario may set, checked as the chat endpoint would."""
    if not isinstance(parameters, dict):
        raise TemplateError(f"{where} must be an object, got {_shown(parameters)}", where)
    for key, value in parameters.items():
        param = f"{where}.{key}" if where else key
        if key not in PARAMETERS:
            raise TemplateError(f"unknown parameter '{key}'; one of {', '.join(PARAMETERS)} may be set here", param)
        problem = _parameter_problem(key, value)
        if problem:
            raise TemplateError(f"{param} {problem}, got {_shown(value)}", param)
    return dict(parameters)


def check_policy(policy: Any, check_guardrails: Callable[[Any, str], dict[str, Any]] | None = None) -> dict[str, Any]:
    """A scenario's policy: fixed `parameters` over the template's, a `max_tokens_cap`, which
    parameters a caller may still set (`allow_overrides`), and guard policy overrides
    (`guardrails`, over its tenant's)."""
    if not isinstance(policy, dict):
        raise TemplateError(f"policy must be an object, got {_shown(policy)}", "policy")
    for key in policy:
        if key not in _POLICY_FIELDS:
            raise TemplateError(f"unknown policy field '{key}'; use {', '.join(_POLICY_FIELDS)}", f"policy.{key}")
    cap = policy.get("max_tokens_cap")
    if cap is not None and not (_is_int(cap) and cap >= 1):
        raise TemplateError(f"policy.max_tokens_cap must be an integer of at least 1, got {_shown(cap)}",
                            "policy.max_tokens_cap")
    allowed = policy.get("allow_overrides", [])
    if not isinstance(allowed, list) or any(key not in PARAMETERS for key in allowed):
        raise TemplateError(f"policy.allow_overrides must be a list of {', '.join(PARAMETERS)}, got {_shown(allowed)}",
                            "policy.allow_overrides")
    parameters = check_parameters(policy.get("parameters", {}), "policy.parameters")
    checked = {"parameters": parameters, "max_tokens_cap": cap, "allow_overrides": list(dict.fromkeys(allowed))}
    if policy.get("guardrails") is not None:
        if check_guardrails is None:
            raise TemplateError("guardrails cannot be set on a scenario here", "policy.guardrails")
        checked["guardrails"] = check_guardrails(policy["guardrails"], "policy.guardrails")
    return checked


def run_parameters(
    template: TemplateVersion, scenario: ScenarioVersion, overrides: dict[str, Any], *, default_max_tokens: int
) -> dict[str, Any]:
    """What a scenario call samples with: the template's defaults, the scenario's fixed
    parameters, then the caller's overrides the policy allows; max_tokens within the cap."""
    label = f"scenario '{scenario.name}' v{scenario.version}"
    allowed = scenario.policy["allow_overrides"]
    for key in overrides:
        if key not in allowed:
            may = f"it lets callers set only {', '.join(allowed)}" if allowed else "it lets callers set none"
            raise TemplateError(f"{label} does not let callers set '{key}'; {may}", key)
    parameters = check_parameters(template.parameters | scenario.policy["parameters"] | overrides, where="")
    cap = scenario.policy["max_tokens_cap"]
    if cap is not None:
        asked = parameters.get("max_tokens")
        if asked is not None and asked > cap:
            raise TemplateError(f"max_tokens is {asked}, over {label}'s cap of {cap}", "max_tokens")
        if asked is None and default_max_tokens > cap:
            parameters["max_tokens"] = cap
    return parameters


@dataclass(frozen=True)
class Rendered:
    template: TemplateVersion
    messages: list[dict[str, str]]


@dataclass(frozen=True)
class ScenarioCall:
    """A scenario call ready to run as a chat completion."""

    scenario: ScenarioVersion
    template: TemplateVersion
    model: str
    messages: list[dict[str, str]]
    parameters: dict[str, Any]


class TemplateService:
    def __init__(
        self,
        *,
        store: TemplateStore,
        default_max_tokens: int,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        check_guardrails: Callable[[Any, str], dict[str, Any]] | None = None,
    ) -> None:
        """`check_guardrails` validates a scenario's guard policy overrides (PolicyError names the field)."""
        self._store = store
        self._check_guardrails = check_guardrails
        self._default_max_tokens = default_max_tokens
        self._now = wall_clock

    async def create_template(
        self, *, name: str, messages: Any, variables: Any = None, model: str | None = None, parameters: Any = None,
        description: str | None = None,
    ) -> TemplateVersion:
        """The next version of the template `name` (1 for a new name)."""
        _check_model(model)
        messages, variables, parameters = check_template(
            name=name, messages=messages, variables={} if variables is None else variables,
            parameters={} if parameters is None else parameters,
        )
        return await self._store.add_template(
            name=name, messages=messages, variables=variables, model=model, parameters=parameters,
            description=description, at=self._now(),
        )

    async def template(self, name: str, version: int | None = None) -> TemplateVersion:
        return await self._store.template(name, version)

    async def template_versions(self, name: str) -> list[TemplateVersion]:
        return await self._store.template_versions(name)

    async def templates(self) -> list[TemplateVersion]:
        """The newest version of every template."""
        return await self._store.latest_templates()

    async def render(self, name: str, variables: Any, version: int | None = None) -> Rendered:
        template = await self._store.template(name, version)
        return Rendered(template=template, messages=render(template, variables))

    async def create_scenario(
        self, *, name: str, template: str, template_version: int | None = None, model: str | None = None,
        policy: Any = None, description: str | None = None,
    ) -> ScenarioVersion:
        """The next version of the scenario `name`, which becomes its active one. Without
        `template_version` it pins the template's newest version now."""
        _check_name("scenario", name)
        _check_model(model)
        policy = check_policy({} if policy is None else policy, self._check_guardrails)
        bound = await self._store.template(template, template_version)
        if model is None and bound.model is None:
            raise TemplateError(
                f"scenario '{name}' needs a model: template '{bound.name}' v{bound.version} names none", "model"
            )
        fixed = (bound.parameters | policy["parameters"]).get("max_tokens")
        cap = policy["max_tokens_cap"]
        if cap is not None and fixed is not None and fixed > cap:
            raise TemplateError(
                f"scenario '{name}' would set max_tokens {fixed}, over its own max_tokens_cap of {cap}",
                "policy.max_tokens_cap",
            )
        return await self._store.add_scenario(
            name=name, template=bound.name, template_version=bound.version, model=model, policy=policy,
            description=description, at=self._now(),
        )

    async def scenario(self, name: str, version: int | None = None) -> ScenarioVersion:
        return await self._store.scenario(name, version)

    async def scenario_versions(self, name: str) -> list[ScenarioVersion]:
        return await self._store.scenario_versions(name)

    async def scenarios(self) -> list[ScenarioVersion]:
        """The active version of every scenario."""
        return await self._store.active_scenarios()

    async def activate_scenario(self, name: str, version: int) -> ScenarioVersion:
        """Make `version` the one calls use: a rollback is activating an older one."""
        return await self._store.activate_scenario(name, version, at=self._now())

    async def rollback_scenario(self, name: str) -> ScenarioVersion:
        """Activate the version just before the active one."""
        active = await self._store.scenario(name)
        if active.version == 1:
            raise TemplateError(f"scenario '{name}' is at version 1; there is no older version to roll back to",
                                "version")
        return await self.activate_scenario(name, active.version - 1)

    async def prepare_call(self, name: str, variables: Any, overrides: dict[str, Any]) -> ScenarioCall:
        """The active version of scenario `name`, rendered with `variables`."""
        scenario = await self._store.scenario(name)
        template = await self._store.template(scenario.template, scenario.template_version)
        parameters = run_parameters(template, scenario, overrides, default_max_tokens=self._default_max_tokens)
        model = scenario.model or template.model
        assert model is not None, "a scenario is created with a model or over a template that names one"
        return ScenarioCall(
            scenario=scenario, template=template, model=model, messages=render(template, variables),
            parameters=parameters,
        )


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TemplateError(
            f"a {kind} name is 1-128 letters, digits or ._- starting with a letter or digit, got {_shown(name)}", "name"
        )


def _check_model(model: Any) -> None:
    if model is not None and not (isinstance(model, str) and model.strip()):
        raise TemplateError(f"model must be a model name or alias, got {_shown(model)}", "model")


def _check_variables(template: str, variables: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(variables, dict):
        raise TemplateError(f"template '{template}': variables must be an object of name to declaration", "variables")
    declared: dict[str, dict[str, Any]] = {}
    for name, spec in variables.items():
        where = f"variables.{name}"
        if not _VARIABLE_NAME.fullmatch(name):
            raise TemplateError(
                f"template '{template}': variable name '{name}' must be a letter or _ then letters, digits or _ "
                "(at most 64)", where,
            )
        if not isinstance(spec, dict):
            raise TemplateError(f"template '{template}': variable '{name}' must be declared as an object "
                                f"with {', '.join(_VARIABLE_FIELDS)}", where)
        for field in spec:
            if field not in _VARIABLE_FIELDS:
                raise TemplateError(f"template '{template}': variable '{name}' has an unknown field '{field}'; "
                                    f"use {', '.join(_VARIABLE_FIELDS)}", f"{where}.{field}")
        try:
            kind = VariableType(spec.get("type"))
        except ValueError:
            raise TemplateError(
                f"template '{template}': variable '{name}' needs a type: one of "
                f"{', '.join(t.value for t in VariableType)}",
                f"{where}.type",
            ) from None
        default = spec.get("default")
        required = spec.get("required", default is None)
        if not isinstance(required, bool):
            raise TemplateError(f"template '{template}': variable '{name}': required must be true or false",
                                f"{where}.required")
        if required and default is not None:
            raise TemplateError(f"template '{template}': variable '{name}' is required and has a default; drop one",
                                f"{where}.required")
        if default is not None and not kind.accepts(default):
            raise TemplateError(f"template '{template}': the default of variable '{name}' must be {kind.described}, "
                                f"got {_shown(default)}", f"{where}.default")
        description = spec.get("description")
        if description is not None and not isinstance(description, str):
            raise TemplateError(f"template '{template}': the description of variable '{name}' must be a string",
                                f"{where}.description")
        declared[name] = {"type": kind.value, "required": required, "default": default, "description": description}
    return declared


def _check_messages(template: str, messages: Any, declared: set[str]) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise TemplateError(f"template '{template}' needs a list of at least one message", "messages")
    checked = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise TemplateError(
                f"template '{template}': {where} must be an object with exactly role and content", where
            )
        if message["role"] not in ROLES:
            raise TemplateError(f"template '{template}': {where}.role must be one of {', '.join(ROLES)}, "
                                f"got {_shown(message['role'])}", f"{where}.role")
        source = message["content"]
        if not isinstance(source, str):
            raise TemplateError(f"template '{template}': {where}.content must be a string (Jinja2 source)",
                                f"{where}.content")
        try:
            used = meta.find_undeclared_variables(_ENV.parse(source))
            _compiled(source)
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(
                f"template '{template}': {where}.content does not compile: {e.message} (line {e.lineno})",
                f"{where}.content",
            ) from e
        undeclared = sorted(used - declared - set(_ENV.globals))
        if undeclared:
            raise TemplateError(
                f"template '{template}' uses the variable '{undeclared[0]}' in {where}.content but does not "
                "declare it; add it to variables", undeclared[0],
            )
        checked.append({"role": message["role"], "content": source})
    return checked


def _parameter_problem(key: str, value: Any) -> str | None:
    if key == "max_tokens" and not (_is_int(value) and value >= 1):
        return "must be an integer of at least 1"
    if key == "temperature" and not (_is_number(value) and 0 <= value <= 2):
        return "must be a number from 0 to 2"
    if key == "top_p" and not (_is_number(value) and 0 < value <= 1):
        return "must be a number above 0 and at most 1"
    if key == "seed" and not _is_int(value):
        return "must be an integer"
    if key == "stop":
        sequences = [value] if isinstance(value, str) else value
        well_formed = isinstance(sequences, list) and all(isinstance(s, str) and s for s in sequences)
        if not well_formed or len(sequences) > 4:
            return "must be a non-empty string or a list of at most 4 non-empty strings"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(value: Any) -> str:
    """A value as an error message quotes it: 'abc' for a string, JSON for the rest, cut short."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
