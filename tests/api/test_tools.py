"""Function calling through the official client against a tiny random model: with tool_choice
"required" or a named function decoding is constrained, so every answer is a call whose
arguments validate (20 seeded runs); streamed calls arrive in OpenAI's delta shape; history with
earlier calls and their results is taken; "auto" parses Hermes-style calls out of the text."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

from genloom.gateway.tools import Tools, ToolSpec, parse_calls, render_history

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"type": "string", "enum": ["c", "f"]}},
    "required": ["city", "unit"], "additionalProperties": False,
}
TIME = {"type": "object", "properties": {"zone": {"type": "integer", "minimum": -12, "maximum": 14}}, "required": ["zone"],
        "additionalProperties": False}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME}},
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def test_required_gives_a_valid_call_every_time(client):
    for seed in range(20):
        answer = client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                                max_tokens=80, temperature=1.0, seed=seed)
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None, (seed, choice)
        [call] = choice.message.tool_calls
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_a_named_function_is_the_one_called(client):
    for seed in range(5):
        answer = client.chat.completions.create(
            model="tiny", messages=ASK, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_time"}},
            max_tokens=40, temperature=1.0, seed=seed,
        )
        [call] = answer.choices[0].message.tool_calls
        assert call.function.name == "get_time"
        jsonschema.validate(json.loads(call.function.arguments), TIME)


def test_a_streamed_call_arrives_as_tool_call_deltas(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                                 max_tokens=80, temperature=1.0, seed=4, stream=True))
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].index == 0 and deltas[0].id.startswith("call_")
    arguments = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(arguments), SCHEMAS[deltas[0].function.name])
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_history_with_calls_and_results_is_taken(client):
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "c"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
    ]
    answer = client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, max_tokens=5)
    assert answer.choices[0].finish_reason in ("stop", "length", "tool_calls")


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools.0.function.name"),
    ({"tools": TOOLS, "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
    ({"functions": [{"name": "f"}]}, "functions"),
])
def test_bad_tool_requests_are_400_naming_the_field(base_url, body, param):
    answer = httpx.post(f"{base_url}/v1/chat/completions", json={"model": "tiny", "messages": ASK} | body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_auto_parses_hermes_calls_and_keeps_the_rest_as_content():
    tools = Tools(specs=(ToolSpec("get_weather", "", WEATHER),), choice="auto")
    text = 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "c"}}\n</tool_call>'
    content, [call] = parse_calls(text, tools)
    assert content == "Let me check." and call.name == "get_weather" and json.loads(call.arguments)["city"] == "Oslo"
    unknown = '<tool_call>{"name": "launch", "arguments": {}}</tool_call>'
    assert parse_calls(unknown, tools) == (unknown, [])  # a call to no offered tool stays text
    assert parse_calls("just words", tools) == ("just words", [])


def test_a_template_without_tools_gets_them_in_a_system_message():
    tools = Tools(specs=(ToolSpec("get_weather", "Weather", WEATHER),), choice="auto")
    rendered = render_history([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "type": "function",
                                                               "function": {"name": "get_weather", "arguments": '{"city": "X"}'}}]},
        {"role": "tool", "tool_call_id": "c", "content": "sunny"},
    ], tools)
    assert rendered[0]["role"] == "system" and "<tools>" in rendered[0]["content"] and "get_weather" in rendered[0]["content"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "X"}}\n</tool_call>' == rendered[2]["content"]
    assert rendered[3] == {"role": "user", "content": "<tool_response>\nsunny\n</tool_response>"}


def test_llama3_json_calls_are_read_when_the_model_says_so():
    tools = Tools(specs=(ToolSpec("get_weather", "", WEATHER),), choice="auto", parser="llama3_json")
    content, [call] = parse_calls('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Rome", "unit": "c"}}', tools)
    assert content is None and call.name == "get_weather" and json.loads(call.arguments) == {"city": "Rome", "unit": "c"}
    two = '{"name": "get_weather", "parameters": {"city": "A", "unit": "c"}}; {"name": "get_weather", "parameters": {"city": "B", "unit": "f"}}'
    assert [json.loads(c.arguments)["city"] for c in parse_calls(two, tools)[1]] == ["A", "B"]
    assert parse_calls("It is sunny.", tools) == ("It is sunny.", [])


def test_a_models_tool_parser_is_chosen_in_its_settings(tmp_path, tiny_model_dir):
    from tests.api.conftest import running_server

    models = [{"name": "tiny", "path": str(tiny_model_dir), "tool_parser": "llama3_json"}]
    with running_server(tmp_path, tiny_model_dir, models=models) as (base, server):
        assert server.c.service.tool_parsers == {"tiny@v1": "llama3_json"}
        bad = httpx.post(f"{base}/v1/admin/models", json={"name": "t2", "path": str(tiny_model_dir), "tool_parser": "xml"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "tool_parser"
