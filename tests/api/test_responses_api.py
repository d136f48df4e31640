"""The Responses API through the official client: plain and streamed (the typed event sequence),
a conversation continued by previous_response_id, function tools, text.format json_schema,
get and delete, and another tenant's response not found."""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest

PERSON = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}, "age": {"type": "integer", "minimum": 0,
          "maximum": 99}}, "required": ["name", "age"], "additionalProperties": False}
WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}}, "required": ["city"],
                          "additionalProperties": False}}


def test_create_plain_get_and_delete(client):
    response = client.responses.create(model="tiny", input="Hello", instructions="Be brief.", max_output_tokens=8)
    assert response.id.startswith("resp_") and response.status in ("completed", "incomplete")
    assert response.output[0].type == "message" and isinstance(response.output_text, str)
    assert response.usage.input_tokens > 0 and response.usage.output_tokens >= 1
    assert client.responses.retrieve(response.id).id == response.id
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)


def test_a_stream_is_the_typed_event_sequence(client):
    events = list(client.responses.create(model="tiny", input="Hello", max_output_tokens=6, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_previous_response_id_continues_the_conversation(client, base_url):
    first = client.responses.create(model="tiny", input="My name is Ada.", max_output_tokens=4)
    second = client.responses.create(model="tiny", input="What is my name?", previous_response_id=first.id, max_output_tokens=4)
    assert second.previous_response_id == first.id
    alone = client.responses.create(model="tiny", input="What is my name?", max_output_tokens=4)
    assert second.usage.input_tokens > alone.usage.input_tokens  # the earlier turn is in the prompt
    missing = httpx.post(f"{base_url}/v1/responses", json={"model": "tiny", "input": "x", "previous_response_id": "resp_nope"})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "response_not_found"


def test_json_schema_format_validates(client):
    response = client.responses.create(model="tiny", input="A person", max_output_tokens=120, temperature=0,
                                       text={"format": {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}})
    jsonschema.validate(json.loads(response.output_text), PERSON)


def test_function_tools_and_their_results(client):
    # Greedy, with room: a random model sampling freely may spell a 10-character city in \u escapes.
    response = client.responses.create(model="tiny", input="Weather in Paris?", tools=[WEATHER], tool_choice="required",
                                       max_output_tokens=120, temperature=0)
    [call] = [o for o in response.output if o.type == "function_call"]
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)
    follow = client.responses.create(model="tiny", previous_response_id=response.id, tools=[WEATHER], max_output_tokens=4,
                                     input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}])
    assert follow.status in ("completed", "incomplete")
    streamed = list(client.responses.create(model="tiny", input="Weather?", tools=[WEATHER], tool_choice="required",
                                            max_output_tokens=120, temperature=0, stream=True))
    done = [e for e in streamed if e.type == "response.function_call_arguments.done"]
    assert done and done[0].name == "get_weather" and "city" in json.loads(done[0].arguments)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": []}, "input"),
    ({"input": [{"type": "web_search_call"}]}, "input.0.type"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools.0"),
    ({"input": "x", "background": True}, "background"),
    ({"input": "x", "temprature": 1}, "temprature"),
])
def test_bad_requests_are_400_naming_the_field(base_url, body, param):
    answer = httpx.post(f"{base_url}/v1/responses", json={"model": "tiny"} | body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
