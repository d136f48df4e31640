"""Structured output by constrained decoding: a tiny random model, which on its own writes noise,
answers `response_format` requests with JSON that parses and validates every time (50 seeded
runs), through the official client's `parse` with a pydantic model too, streamed or not."""

from __future__ import annotations

import json

import jsonschema
import pydantic
import pytest

HELLO = [{"role": "user", "content": "Describe a person."}]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "tags", "active"],
    "additionalProperties": False,
}


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}}


def test_fifty_seeded_runs_all_parse_and_validate(client):
    for seed in range(50):
        answer = client.chat.completions.create(
            model="tiny", messages=HELLO, max_tokens=120, temperature=1.0, seed=seed, response_format=schema_format(PERSON),
        )
        choice = answer.choices[0]
        assert choice.finish_reason == "stop", (seed, choice.message.content)
        jsonschema.validate(json.loads(choice.message.content), PERSON)


def test_json_object_gives_a_json_object(client):
    for seed in range(5):
        answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=200, temperature=0.7, seed=seed,
                                                response_format={"type": "json_object"})
        if answer.choices[0].finish_reason == "stop":
            assert isinstance(json.loads(answer.choices[0].message.content), dict)
        else:  # out of tokens first: cut short, as OpenAI's would be
            assert answer.choices[0].finish_reason == "length"


class Person(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=120)
    active: bool


def test_the_official_clients_parse_with_a_pydantic_model(client):
    completion = client.chat.completions.parse(model="tiny", messages=HELLO, max_tokens=120, temperature=0.8, seed=3,
                                               response_format=Person)
    person = completion.choices[0].message.parsed
    assert isinstance(person, Person) and 0 <= person.age <= 120


def test_a_streamed_structured_answer_is_valid_when_joined(client):
    chunks = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=120, temperature=1.0, seed=11,
                                            response_format=schema_format(PERSON), stream=True)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(text), PERSON)


@pytest.mark.parametrize("schema", [{"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4},
                                    {"type": "string", "pattern": "^[a-c]{3}$"}])
def test_any_top_level_schema(client, schema):
    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=60, temperature=1.0, seed=5,
                                            response_format=schema_format(schema))
    jsonschema.validate(json.loads(answer.choices[0].message.content), schema)
