"""Structured output: a response_format's JSON schema as the grammar a worker constrains
decoding with (runtimes/constrain.py), checked when the request arrives."""

from __future__ import annotations

import json
from typing import Any

from genloom.gateway.errors import InvalidRequest


def json_grammar(schema: dict[str, Any] | None) -> str:
    """The grammar for JSON that validates against `schema` (None: any JSON object), compact:
    no whitespace between tokens, so a model cannot fill its budget with spaces."""
    import llguidance

    target = schema if schema is not None else {"type": "object"}
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(json.dumps(target), defaults={"whitespace_flexible": False})
    except (ValueError, TypeError) as e:
        raise InvalidRequest(f"response_format: the schema cannot be enforced: {e}", "response_format") from e
    error = llguidance.LLMatcher.validate_grammar(grammar)
    if error:
        raise InvalidRequest(f"response_format: the schema cannot be enforced: {error}", "response_format")
    return grammar


def response_grammar(response_format: dict[str, Any] | None) -> str | None:
    """The grammar for OpenAI's `response_format`: none for `text`, any JSON object for
    `json_object`, the schema for `json_schema` (strict or not: it is always enforced)."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return json_grammar(None)
    if kind == "json_schema":
        spec = response_format.get("json_schema") if response_format else None
        if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
            raise InvalidRequest("response_format.json_schema must be an object with a 'schema' object", "response_format")
        return json_grammar(spec.get("schema") or {})
    raise InvalidRequest(f"response_format type {kind!r} is not one of text, json_object, json_schema", "response_format")
