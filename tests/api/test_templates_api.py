"""Prompt templates and scenarios over real HTTP: admin routes create versions, a scenario run is
a chat completion through the TextService, errors answer in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import running_server

ADMIN_KEY = "gl-" + "t" * 43
GREETING = {
    "name": "greet",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to {{ name }}{% for _ in range(count - 1) %} again{% endfor %}."},
    ],
    "variables": {"name": {"type": "string"}, "count": {"type": "integer", "default": 1}},
    "model": "tiny",
    "parameters": {"max_tokens": 4, "temperature": 0},
}
FAREWELL = GREETING | {"messages": [{"role": "user", "content": "Say goodbye to {{ name }}."}],
                       "variables": {"name": {"type": "string"}}}


@pytest.fixture(scope="module")
def http(tmp_path_factory, tiny_model_dir) -> Iterator[httpx.Client]:
    with running_server(tmp_path_factory.mktemp("templates"), tiny_model_dir) as (url, _):
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client


def created(answer: httpx.Response) -> dict:
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_scenario_runs_its_active_version_and_rolls_back(http: httpx.Client):
    v1 = created(http.post("/v1/admin/templates", json=GREETING))
    v2 = created(http.post("/v1/admin/templates", json=FAREWELL))
    assert (v1["version"], v2["version"]) == (1, 2) and v1["object"] == "template.version"
    assert v1["variables"]["count"] == {"type": "integer", "required": False, "default": 1, "description": None}
    assert [t["version"] for t in http.get("/v1/admin/templates/greet").json()["versions"]] == [1, 2]
    assert http.get("/v1/admin/templates/greet/versions/1").json()["messages"] == GREETING["messages"]
    assert {"greet": 2} == {t["name"]: t["version"] for t in http.get("/v1/admin/templates").json()["data"]}

    policy = {"allow_overrides": ["max_tokens"], "max_tokens_cap": 8}
    first = created(http.post("/v1/admin/scenarios",
                              json={"name": "hello", "template": {"name": "greet", "version": 1}, "policy": policy}))
    assert (first["version"], first["active"], first["template"]) == (1, True, {"name": "greet", "version": 1})
    run = http.post("/v1/scenarios/hello/run", json={"variables": {"name": "Ada", "count": 2}})
    assert run.status_code == 200, run.text
    answer = run.json()
    assert answer["object"] == "chat.completion" and answer["model"] == "tiny"
    assert answer["choices"][0]["message"]["role"] == "assistant" and answer["usage"]["completion_tokens"] <= 4
    assert answer["scenario"] == {"name": "hello", "version": 1, "template": {"name": "greet", "version": 1}}
    assert run.headers["x-genloom-scenario"] == "hello/1" and run.headers["x-genloom-template"] == "greet/1"

    # The same messages and parameters through /v1/chat/completions give the same greedy answer.
    rendered = http.post("/v1/templates/greet/render", json={"variables": {"name": "Ada", "count": 2}, "version": 1})
    assert rendered.json()["messages"][1] == {"role": "user", "content": "Say hello to Ada again."}
    same = {"model": "tiny", "messages": rendered.json()["messages"], "max_tokens": 4, "temperature": 0}
    direct = http.post("/v1/chat/completions", json=same)
    assert direct.json()["choices"][0]["message"] == answer["choices"][0]["message"]

    second = created(http.post("/v1/admin/scenarios", json={"name": "hello", "template": {"name": "greet"}}))
    assert (second["version"], second["template"]["version"]) == (2, 2)  # no version given: the newest, pinned
    assert http.post("/v1/scenarios/hello/run", json={"variables": {"name": "Ada"}}).json()["scenario"] == {
        "name": "hello", "version": 2, "template": {"name": "greet", "version": 2}}

    back = http.post("/v1/admin/scenarios/hello/activate", json={"version": 1})
    assert back.status_code == 200 and back.json()["version"] == 1 and back.json()["active"]
    again = http.post("/v1/scenarios/hello/run", json={"variables": {"name": "Ada", "count": 2}, "max_tokens": 2})
    assert again.json()["scenario"]["version"] == 1 and again.json()["usage"]["completion_tokens"] <= 2
    listed = http.get("/v1/admin/scenarios/hello").json()
    assert (listed["active_version"], listed["latest_version"]) == (1, 2)
    assert [s["active"] for s in listed["versions"]] == [True, False]
    assert http.get("/v1/admin/scenarios/hello/versions/2").json()["template"] == {"name": "greet", "version": 2}
    assert [(s["name"], s["version"]) for s in http.get("/v1/admin/scenarios").json()["data"]] == [("hello", 1)]
    assert http.post("/v1/admin/scenarios/hello/activate", json={"version": 2}).json()["version"] == 2
    assert http.post("/v1/admin/scenarios/hello/rollback").json()["version"] == 1
    assert http.post("/v1/admin/scenarios/hello/rollback").status_code == 400  # nothing older than 1


def test_a_scenario_run_can_stream(http: httpx.Client):
    created(http.post("/v1/admin/templates", json=GREETING | {"name": "streamed"}))
    created(http.post("/v1/admin/scenarios", json={"name": "streaming", "template": {"name": "streamed"}}))
    body = {"variables": {"name": "Ada"}, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/scenarios/streaming/run", json=body) as s:
        assert s.status_code == 200 and s.headers["x-genloom-scenario"] == "streaming/1"
        lines = [line[6:] for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[-1]["usage"]["completion_tokens"] <= 4


@pytest.fixture(scope="module")
def checked(http: httpx.Client) -> str:
    created(http.post("/v1/admin/templates", json=GREETING | {"name": "checked"}))
    policy = {"allow_overrides": ["max_tokens"], "max_tokens_cap": 6}
    body = {"name": "checked", "template": {"name": "checked"}, "policy": policy}
    created(http.post("/v1/admin/scenarios", json=body))
    return "checked"


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"variables": {}}, "name", "missing required variable 'name' for template 'checked' v1"),
        ({"variables": {"name": "Ada", "count": "abc"}}, "count", "variable 'count' must be an integer, got 'abc'"),
        ({"variables": {"name": "Ada", "mood": "happy"}}, "mood", "declares no variable 'mood'"),
        ({"variables": {"name": "Ada"}, "temperature": 1.5}, "temperature", "does not let callers set 'temperature'"),
        ({"variables": {"name": "Ada"}, "max_tokens": 7}, "max_tokens", "over scenario 'checked' v1's cap of 6"),
        ({"variables": {"name": "Ada"}, "max_tokens": "many"}, "max_tokens", "must be an integer of at least 1"),
        ({"variables": {"name": "Ada"}, "n": 2}, "n", "unrecognized request argument"),
    ],
)
def test_a_bad_scenario_call_is_a_400_naming_the_variable(http: httpx.Client, checked: str, body, param, message):
    answer = http.post(f"/v1/scenarios/{checked}/run", json=body)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and message in error["message"]


def test_a_template_using_an_undeclared_variable_is_refused(http: httpx.Client):
    body = GREETING | {"name": "sloppy", "variables": {"name": {"type": "string"}}}
    answer = http.post("/v1/admin/templates", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "count" and "template 'sloppy'" in answer.json()["error"]["message"]
    assert http.get("/v1/admin/templates/sloppy").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "code"),
    [
        ("POST", "/v1/scenarios/nope/run", {"variables": {}}, "scenario_not_found"),
        ("POST", "/v1/templates/nope/render", {"variables": {}}, "template_not_found"),
        ("GET", "/v1/admin/templates/nope", None, "template_not_found"),
        ("GET", "/v1/admin/templates/checked/versions/99", None, "template_not_found"),
        ("GET", "/v1/admin/scenarios/nope", None, "scenario_not_found"),
        ("POST", "/v1/admin/scenarios/checked/activate", {"version": 99}, "scenario_not_found"),
        ("POST", "/v1/admin/scenarios", {"name": "x", "template": {"name": "nope"}}, "template_not_found"),
    ],
)
def test_unknown_templates_and_scenarios_are_404_in_openai_shape(http: httpx.Client, checked, method, path, body, code):
    answer = http.request(method, path, json=body)
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == code and answer.json()["error"]["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def admin_and_tenant(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    with running_server(tmp_path_factory.mktemp("auth"), tiny_model_dir, auth="enabled", admin_key=ADMIN_KEY) as (url, _):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as admin:
            tenant = created(admin.post("/v1/admin/tenants", json={"name": "acme"}))
            key = created(admin.post(f"/v1/admin/tenants/{tenant['id']}/keys", json={"name": "ci"}))["key"]
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as as_tenant:
                yield admin, as_tenant


def test_a_tenant_key_runs_scenarios_but_cannot_manage_them(admin_and_tenant):
    admin, as_tenant = admin_and_tenant
    refused = as_tenant.post("/v1/admin/templates", json=GREETING)
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    assert as_tenant.get("/v1/admin/scenarios").status_code == 403
    assert httpx.post(f"{as_tenant.base_url}/v1/scenarios/hello/run", json={}).status_code == 401

    created(admin.post("/v1/admin/templates", json=GREETING))
    created(admin.post("/v1/admin/scenarios", json={"name": "hello", "template": {"name": "greet"}}))
    assert as_tenant.post("/v1/admin/scenarios/hello/activate", json={"version": 1}).status_code == 403
    answer = as_tenant.post("/v1/scenarios/hello/run", json={"variables": {"name": "Ada"}})
    assert answer.status_code == 200 and answer.json()["scenario"]["version"] == 1
    assert as_tenant.post("/v1/templates/greet/render", json={"variables": {"name": "Ada"}}).status_code == 200


def test_the_chat_endpoint_runs_a_scenario_named_as_its_model(http: httpx.Client):
    created(http.post("/v1/admin/templates", json=GREETING | {"name": "chat-greet"}))
    created(http.post("/v1/admin/scenarios", json={"name": "chat-greeter", "template": {"name": "chat-greet"},
                                                   "model": "tiny", "policy": {"allow_overrides": ["max_tokens"]}}))
    body = {"model": "scenario:chat-greeter", "messages": [{"role": "user", "content": "and now?"}],
            "metadata": {"name": "Ada"}, "max_tokens": 3}
    answer = http.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200 and answer.json()["model"] == "tiny"
    missing = http.post("/v1/chat/completions", json=body | {"metadata": {}})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "name"
    refused = http.post("/v1/chat/completions", json=body | {"temperature": 0.5})  # not an allowed override
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "temperature"
    unknown = http.post("/v1/chat/completions", json=body | {"model": "scenario:nope"})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "scenario_not_found"
