"""Prompt templates: checking and rendering as pure functions, then versions and scenarios kept in
a real SQLite file by the TemplateService."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from genloom.gateway.errors import InvalidRequest
from genloom.gateway.templates import (
    ScenarioNotFound,
    TemplateError,
    TemplateNotFound,
    TemplateService,
    check_policy,
    check_template,
    render,
    run_parameters,
)
from genloom.store import Database
from genloom.store.templates import ScenarioVersion, TemplateStore, TemplateVersion

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
GREETING = [
    {"role": "system", "content": "You greet people{% if formal %} formally{% endif %}."},
    {"role": "user",
     "content": "Greet {{ name }} {{ count }} times{% if tags %} ({{ tags | join(', ') }}){% endif %}."},
]
VARIABLES = {
    "name": {"type": "string", "description": "who to greet"},
    "count": {"type": "integer", "default": 1},
    "formal": {"type": "boolean", "default": False},
    "tags": {"type": "list", "required": False},
}


def template(
    messages: list[dict[str, Any]] = GREETING, variables: dict[str, Any] = VARIABLES, parameters: Any = None
) -> TemplateVersion:
    checked, declared, params = check_template(
        name="greet", messages=messages, variables=variables, parameters=parameters or {}
    )
    return TemplateVersion(name="greet", version=1, messages=checked, variables=declared, model="tiny",
                           parameters=params, created_at=T0)


def scenario(policy: dict[str, Any]) -> ScenarioVersion:
    return ScenarioVersion(name="hello", version=2, template="greet", template_version=1, model=None,
                           policy=check_policy(policy), created_at=T0, active_version=2)


def test_render_fills_in_given_variables_and_defaults():
    messages = render(template(), {"name": "Ada"})
    assert messages == [
        {"role": "system", "content": "You greet people."},
        {"role": "user", "content": "Greet Ada 1 times."},
    ]
    given = render(template(), {"name": "Ada", "count": 3, "formal": True, "tags": ["a", "b"]})
    assert given[0]["content"] == "You greet people formally."
    assert given[1]["content"] == "Greet Ada 3 times (a, b)."


def test_a_missing_required_variable_is_named():
    with pytest.raises(TemplateError, match="missing required variable 'name' for template 'greet' v1") as refused:
        render(template(), {"count": 2})
    assert refused.value.param == "name"
    assert isinstance(refused.value, InvalidRequest)  # so the API answers 400


@pytest.mark.parametrize(
    ("variables", "param", "message"),
    [
        ({"name": "Ada", "count": "abc"}, "count", "variable 'count' must be an integer, got 'abc'"),
        ({"name": "Ada", "count": True}, "count", "variable 'count' must be an integer, got true"),
        ({"name": "Ada", "count": 1.5}, "count", "variable 'count' must be an integer, got 1.5"),
        ({"name": 7}, "name", "variable 'name' must be a string, got 7"),
        ({"name": "Ada", "formal": "yes"}, "formal", "variable 'formal' must be a boolean, got 'yes'"),
        ({"name": "Ada", "tags": "a,b"}, "tags", "variable 'tags' must be a list, got 'a,b'"),
        ({"name": None}, "name", "variable 'name' must be a string, got null"),
    ],
)
def test_a_variable_of_the_wrong_type_is_refused_not_converted(variables, param, message):
    with pytest.raises(TemplateError, match=message) as refused:
        render(template(), variables)
    assert refused.value.param == param


def test_a_number_variable_takes_integers_and_floats():
    t = template([{"role": "user", "content": "{{ x * 2 }}"}], {"x": {"type": "number"}})
    assert render(t, {"x": 2})[0]["content"] == "4"
    assert render(t, {"x": 0.25})[0]["content"] == "0.5"


def test_an_unknown_variable_is_refused():
    with pytest.raises(TemplateError, match="declares no variable 'nmae'; its variables are: name, count") as refused:
        render(template(), {"name": "Ada", "nmae": "Ada"})
    assert refused.value.param == "nmae"


def test_an_optional_variable_without_a_default_is_none():
    t = template([{"role": "user", "content": "[{{ note }}]{% if note %}!{% endif %}"}],
                 {"note": {"type": "string", "required": False}})
    assert render(t, {})[0]["content"] == "[None]"
    assert render(t, {"note": "hi"})[0]["content"] == "[hi]!"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ name.__class__ }}",
        "{{ tags.append('x') }}",  # the immutable sandbox: no mutation either
        "{{ name * 1000000 }}",  # a string too long to build
        "{{ 10 ** 100000 }}",
    ],
)
def test_the_sandbox_refuses_attribute_tricks_mutation_and_huge_values(source):
    t = template([{"role": "user", "content": source}], {"name": {"type": "string"}, "tags": {"type": "list"}})
    with pytest.raises(TemplateError, match="sandbox forbids") as refused:
        render(t, {"name": "Ada", "tags": ["a"]})
    assert refused.value.param == "variables"


def test_variables_are_data_never_template_source():
    rendered = render(template(), {"name": "{{ ''.__class__ }}{% for x in range(3) %}x{% endfor %}"})
    assert rendered[1]["content"] == "Greet {{ ''.__class__ }}{% for x in range(3) %}x{% endfor %} 1 times."


def test_a_failing_template_expression_is_a_400_on_the_variables():
    t = template([{"role": "user", "content": "{{ 10 // n }}"}], {"n": {"type": "integer"}})
    with pytest.raises(TemplateError, match="could not be rendered with these variables: ZeroDivisionError"):
        render(t, {"n": 0})


def test_a_template_using_an_undeclared_variable_is_refused_at_creation():
    messages = [{"role": "user", "content": "Hello {{ name }}, {{ mood }}{% for i in range(2) %}!{% endfor %}"}]
    with pytest.raises(TemplateError, match="template 'greet' uses the variable 'mood' in messages.0.content "
                                            "but does not declare it") as refused:
        template(messages, {"name": {"type": "string"}})
    assert refused.value.param == "mood"


@pytest.mark.parametrize(
    ("messages", "variables", "parameters", "param", "message"),
    [
        ([{"role": "user", "content": "{{ name"}], {"name": {"type": "string"}}, {}, "messages.0.content",
         "does not compile"),
        ([{"role": "robot", "content": "hi"}], {}, {}, "messages.0.role", "must be one of system, developer"),
        ([], {}, {}, "messages", "at least one message"),
        ([{"role": "user", "content": "hi"}], {"x": {"type": "float"}}, {}, "variables.x.type", "needs a type"),
        ([{"role": "user", "content": "hi"}], {"x": {"type": "string", "required": True, "default": "a"}}, {},
         "variables.x.required", "is required and has a default"),
        ([{"role": "user", "content": "hi"}], {"x": {"type": "integer", "default": "1"}}, {},
         "variables.x.default", "must be an integer, got '1'"),
        ([{"role": "user", "content": "hi"}], {"x": {"type": "string", "optional": True}}, {},
         "variables.x.optional", "unknown field 'optional'"),
        ([{"role": "user", "content": "hi"}], {"1x": {"type": "string"}}, {}, "variables.1x", "variable name '1x'"),
        ([{"role": "user", "content": "hi"}], {}, {"temperature": 3}, "parameters.temperature",
         "parameters.temperature must be a number from 0 to 2, got 3"),
        ([{"role": "user", "content": "hi"}], {}, {"n": 2}, "parameters.n", "unknown parameter 'n'"),
        ([{"role": "user", "content": "hi"}], {}, {"stop": ["a", ""]}, "parameters.stop", "non-empty strings"),
    ],
)
def test_a_bad_template_is_refused_naming_what_to_fix(messages, variables, parameters, param, message):
    with pytest.raises(TemplateError, match=message) as refused:
        template(messages, variables, parameters)
    assert refused.value.param == param


def test_run_parameters_layer_template_then_scenario_then_allowed_overrides():
    t = template(parameters={"temperature": 0.2, "max_tokens": 40, "seed": 1})
    s = scenario({"parameters": {"temperature": 0.0}, "allow_overrides": ["max_tokens", "stop"], "max_tokens_cap": 64})
    assert run_parameters(t, s, {}, default_max_tokens=256) == {"temperature": 0.0, "max_tokens": 40, "seed": 1}
    assert run_parameters(t, s, {"max_tokens": 64, "stop": "\n"}, default_max_tokens=256)["max_tokens"] == 64
    with pytest.raises(TemplateError, match="does not let callers set 'temperature'; it lets callers set only "
                                            "max_tokens, stop") as refused:
        run_parameters(t, s, {"temperature": 1.0}, default_max_tokens=256)
    assert refused.value.param == "temperature"
    with pytest.raises(TemplateError, match="max_tokens is 65, over scenario 'hello' v2's cap of 64"):
        run_parameters(t, s, {"max_tokens": 65}, default_max_tokens=256)
    with pytest.raises(TemplateError, match="stop must be a non-empty string") as refused:
        run_parameters(t, s, {"stop": 5}, default_max_tokens=256)
    assert refused.value.param == "stop"


def test_a_cap_below_the_default_max_tokens_becomes_the_max_tokens():
    s = scenario({"max_tokens_cap": 16})
    assert run_parameters(template(), s, {}, default_max_tokens=256) == {"max_tokens": 16}
    assert run_parameters(template(), s, {}, default_max_tokens=8) == {}  # the default already fits


@pytest.mark.parametrize(
    ("policy", "param"),
    [
        ({"max_tokens_cap": 0}, "policy.max_tokens_cap"),
        ({"allow_overrides": ["n"]}, "policy.allow_overrides"),
        ({"parameters": {"top_p": 0}}, "policy.parameters.top_p"),
        ({"cap": 10}, "policy.cap"),
    ],
)
def test_a_bad_policy_is_refused(policy, param):
    with pytest.raises(TemplateError) as refused:
        check_policy(policy)
    assert refused.value.param == param


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[TemplateService]:
    database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'genloom.db'}")
    await database.migrate()
    yield TemplateService(store=TemplateStore(database=database), default_max_tokens=256, wall_clock=lambda: T0)
    await database.dispose()


async def test_versions_are_numbered_per_name_and_never_collide(service: TemplateService):
    created = await asyncio.gather(*(
        service.create_template(name="greet", messages=[{"role": "user", "content": f"hi {i}"}]) for i in range(12)
    ))
    assert sorted(t.version for t in created) == list(range(1, 13))
    await service.create_template(name="other", messages=[{"role": "user", "content": "x"}])
    versions = await service.template_versions("greet")
    assert [t.version for t in versions] == list(range(1, 13))
    assert {t.messages[0]["content"] for t in versions} == {f"hi {i}" for i in range(12)}
    assert [(t.name, t.version) for t in await service.templates()] == [("greet", 12), ("other", 1)]
    assert (await service.template("greet")).version == 12
    assert (await service.template("greet", 3)).created_at == T0


async def test_old_template_versions_stay_renderable(service: TemplateService):
    await service.create_template(name="greet", messages=GREETING, variables=VARIABLES, model="tiny")
    await service.create_template(name="greet", messages=[{"role": "user", "content": "Yo {{ who }}"}],
                                  variables={"who": {"type": "string"}})
    assert (await service.render("greet", {"who": "Ada"})).messages == [{"role": "user", "content": "Yo Ada"}]
    old = await service.render("greet", {"name": "Ada"}, version=1)
    assert old.template.version == 1 and old.messages[1]["content"] == "Greet Ada 1 times."
    with pytest.raises(TemplateNotFound, match="prompt template 'greet' has no version 9"):
        await service.render("greet", {}, version=9)
    with pytest.raises(TemplateNotFound, match="no prompt template named 'nope'"):
        await service.template_versions("nope")


async def test_a_scenario_pins_a_template_version_and_rolls_back(service: TemplateService):
    await service.create_template(name="greet", messages=GREETING, variables=VARIABLES, model="tiny")
    first = await service.create_scenario(name="hello", template="greet", policy={"max_tokens_cap": 8})
    assert (first.version, first.template_version, first.active) == (1, 1, True)
    await service.create_template(name="greet", messages=[{"role": "user", "content": "v2 {{ name }}"}],
                                  variables={"name": {"type": "string"}})
    assert (await service.prepare_call("hello", {"name": "Ada"}, {})).template.version == 1  # pinned, not newest

    second = await service.create_scenario(name="hello", template="greet", template_version=2, model="other")
    call = await service.prepare_call("hello", {"name": "Ada"}, {})
    assert (second.version, call.scenario.version, call.template.version) == (2, 2, 2)
    assert call.model == "other" and call.messages == [{"role": "user", "content": "v2 Ada"}]

    back = await service.rollback_scenario("hello")
    assert (back.version, back.active) == (1, True)
    call = await service.prepare_call("hello", {"name": "Ada"}, {})
    assert (call.scenario.version, call.template.version, call.model) == (1, 1, "tiny")
    assert call.parameters == {"max_tokens": 8}
    assert [s.active for s in await service.scenario_versions("hello")] == [True, False]
    assert [(s.name, s.version) for s in await service.scenarios()] == [("hello", 1)]
    with pytest.raises(TemplateError, match="no older version"):
        await service.rollback_scenario("hello")
    assert (await service.activate_scenario("hello", 2)).active
    with pytest.raises(ScenarioNotFound, match="scenario 'hello' has no version 5"):
        await service.activate_scenario("hello", 5)
    with pytest.raises(ScenarioNotFound, match="no scenario named 'bye'"):
        await service.prepare_call("bye", {}, {})


async def test_concurrent_scenario_versions_leave_the_newest_active(service: TemplateService):
    await service.create_template(name="greet", messages=GREETING, variables=VARIABLES, model="tiny")
    created = await asyncio.gather(*(service.create_scenario(name="hello", template="greet") for _ in range(8)))
    assert sorted(s.version for s in created) == list(range(1, 9))
    assert (await service.scenario("hello")).version == 8


async def test_a_scenario_is_refused_without_a_model_an_existing_template_or_a_consistent_cap(
    service: TemplateService,
):
    await service.create_template(
        name="bare", messages=[{"role": "user", "content": "hi"}], parameters={"max_tokens": 50}
    )
    with pytest.raises(TemplateError, match="needs a model: template 'bare' v1 names none") as refused:
        await service.create_scenario(name="s", template="bare")
    assert refused.value.param == "model"
    with pytest.raises(TemplateError, match="max_tokens 50, over its own max_tokens_cap of 20"):
        await service.create_scenario(name="s", template="bare", model="tiny", policy={"max_tokens_cap": 20})
    with pytest.raises(TemplateNotFound):
        await service.create_scenario(name="s", template="bare", template_version=2, model="tiny")
    with pytest.raises(TemplateError) as refused:
        await service.create_scenario(name="bad name", template="bare", model="tiny")
    assert refused.value.param == "name"
    with pytest.raises(ScenarioNotFound):
        await service.scenario("s")
