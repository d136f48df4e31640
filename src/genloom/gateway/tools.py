"""Function calling: the tools a chat request offers, how they reach the model, and how its
answer becomes OpenAI's `tool_calls`.

The model is told about the tools by its own chat template when the template takes `tools`
(Llama 3.1, Qwen, Hermes, …); otherwise by a Hermes-style system message, and earlier calls and
results in the history are written the same way. With `tool_choice` "required" or a named
function, decoding is constrained (a grammar from the tools' parameter schemas) so that the answer
is always a call whose arguments validate; with "auto" the model may write calls in Hermes'
`<tool_call>{"name": …, "arguments": …}</tool_call>` form, which are parsed out of its text."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from genloom.gateway.errors import InvalidRequest

_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {"name": self.name, "description": self.description, "parameters": self.parameters}}


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON, as OpenAI sends it

    def openai(self) -> dict[str, Any]:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class Tools:
    specs: tuple[ToolSpec, ...]
    choice: str  # "none", "auto", "required", or "function" (the one named in `forced`)
    forced: str | None = None
    parser: str = "hermes"  # how the answering model writes calls (its settings' tool_parser)

    @property
    def constrained(self) -> bool:
        """Whether the answer must be a call (decoding is then constrained to one)."""
        return self.choice in ("required", "function")

    @property
    def parsed(self) -> bool:
        """Whether calls are looked for in the answer."""
        return self.choice != "none"

    def call_schema(self) -> dict[str, Any]:
        """The JSON schema of one call to any tool allowed (to the forced one only when named)."""
        allowed = [s for s in self.specs if self.forced in (None, s.name)]
        options = [
            {"type": "object", "properties": {"name": {"const": s.name}, "arguments": _declared_only(s.parameters)},
             "required": ["name", "arguments"], "additionalProperties": False}
            for s in allowed
        ]
        return options[0] if len(options) == 1 else {"anyOf": options}

    def system_prompt(self) -> str:
        """Hermes' function-calling instructions, for a chat template that does not take tools."""
        signatures = "\n".join(json.dumps(s.openai()) for s in self.specs)
        return (
            "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
            "XML tags. You may call one or more functions to assist with the user query. Don't make assumptions "
            f"about what values to plug into functions.\n<tools>\n{signatures}\n</tools>\nFor each function call, "
            'return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n'
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
        )

    def to_record(self) -> dict[str, Any]:
        return {"specs": [s.openai()["function"] for s in self.specs], "choice": self.choice, "forced": self.forced,
                "parser": self.parser}

    @classmethod
    def from_record(cls, record: dict[str, Any] | None) -> Tools | None:
        if record is None:
            return None
        specs = tuple(ToolSpec(s["name"], s.get("description") or "", s.get("parameters") or {}) for s in record["specs"])
        return cls(specs=specs, choice=record["choice"], forced=record.get("forced"), parser=record.get("parser", "hermes"))


def _declared_only(parameters: dict[str, Any]) -> dict[str, Any]:
    """A call's arguments hold the parameters the function declares: a schema that does not say
    whether others are allowed gets `additionalProperties: false` (as OpenAI's strict mode
    requires), so a model cannot wander off into keys nobody reads until max_tokens ends it."""
    if not parameters:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    if parameters.get("type") == "object" and "additionalProperties" not in parameters:
        return parameters | {"additionalProperties": False}
    return parameters


def tools_from_request(tools: list[dict[str, Any]] | None, tool_choice: str | dict[str, Any] | None) -> Tools | None:
    """OpenAI's `tools` and `tool_choice`, checked."""
    if not tools:
        if tool_choice not in (None, "none"):
            raise InvalidRequest("tool_choice needs tools", "tool_choice")
        return None
    specs = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise InvalidRequest("each tool must be {'type': 'function', 'function': {'name': ..., 'parameters': ...}}",
                                 f"tools.{i}")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", function["name"]):
            raise InvalidRequest("a function name has 1 to 64 letters, digits, underscores or dashes", f"tools.{i}.function.name")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise InvalidRequest("a function's parameters are a JSON schema object", f"tools.{i}.function.parameters")
        specs.append(ToolSpec(function["name"], function.get("description") or "", parameters))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise InvalidRequest("tool names must differ", "tools")
    if tool_choice is None or tool_choice in ("auto", "none", "required"):
        return Tools(specs=tuple(specs), choice=tool_choice or "auto")
    if isinstance(tool_choice, dict) and tool_choice.get("type") == "function":
        name = (tool_choice.get("function") or {}).get("name")
        if name not in names:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools", "tool_choice")
        return Tools(specs=tuple(specs), choice="function", forced=name)
    raise InvalidRequest("tool_choice is 'none', 'auto', 'required' or {'type': 'function', 'function': {'name': ...}}",
                         "tool_choice")


def parse_calls(text: str, tools: Tools) -> tuple[str | None, list[ToolCall]]:
    """(content left, calls) of an answer. A constrained answer is one call's JSON; otherwise
    Hermes' <tool_call> blocks naming a known tool are calls, and the rest is content."""
    known = {s.name for s in tools.specs}
    if tools.constrained:
        try:
            call = json.loads(text)
        except json.JSONDecodeError:  # cut short by max_tokens: what there is stays content
            return text, []
        return None, [_call(call["name"], call["arguments"])]
    if not tools.parsed:
        return text, []
    return PARSERS[tools.parser](text, known)


def parse_hermes(text: str, known: set[str]) -> tuple[str | None, list[ToolCall]]:
    """Hermes (Qwen, Hermes, Mistral-style templates): `<tool_call>{"name", "arguments"}</tool_call>` blocks."""
    calls: list[ToolCall] = []

    def take(match: re.Match) -> str:
        try:
            call = json.loads(match.group(1))
        except json.JSONDecodeError:
            return match.group(0)
        if not isinstance(call, dict) or call.get("name") not in known:
            return match.group(0)
        calls.append(_call(call["name"], call.get("arguments", {})))
        return ""

    content = _CALL.sub(take, text).strip()
    return (content or None) if calls else text, calls


def parse_llama3_json(text: str, known: set[str]) -> tuple[str | None, list[ToolCall]]:
    """Llama 3.1/3.2: the whole answer is one call, `{"name": …, "parameters": {…}}` (or several
    separated by ";"), after an optional `<|python_tag|>`; anything else is content."""
    body = text.strip().removeprefix("<|python_tag|>").strip()
    calls: list[ToolCall] = []
    for part in (p.strip() for p in body.split(";")):
        try:
            call = json.loads(part)
        except json.JSONDecodeError:
            return text, []
        if not isinstance(call, dict) or call.get("name") not in known:
            return text, []
        calls.append(_call(call["name"], call.get("parameters", call.get("arguments", {}))))
    return (None, calls) if calls else (text, [])


PARSERS = {"hermes": parse_hermes, "llama3_json": parse_llama3_json}


def _call(name: str, arguments: Any) -> ToolCall:
    return ToolCall(id=f"call_{uuid.uuid4().hex[:24]}", name=name,
                    arguments=arguments if isinstance(arguments, str) else json.dumps(arguments))


def render_history(messages: list[dict[str, Any]], tools: Tools | None) -> list[dict[str, Any]]:
    """Messages for a chat template that does not take tools: the tools in a system message,
    earlier calls as <tool_call> blocks, their results as <tool_response> from the user."""
    rendered: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            rendered.append({"role": "user", "content": f"<tool_response>\n{m.get('content') or ''}\n</tool_response>"})
        elif m.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>\n" + json.dumps({"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])})
                + "\n</tool_call>" for c in m["tool_calls"]
            )
            rendered.append({"role": m["role"], "content": ((m.get("content") or "") + "\n" + calls).strip()})
        else:
            rendered.append({"role": m["role"], "content": m.get("content") or ""})
    if tools is not None:
        prompt = tools.system_prompt()
        if rendered and rendered[0]["role"] in ("system", "developer"):
            rendered[0] = {"role": rendered[0]["role"], "content": rendered[0]["content"] + "\n\n" + prompt}
        else:
            rendered.insert(0, {"role": "system", "content": prompt})
    return rendered


def _arguments(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


def native_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a chat template that takes tools itself: calls' arguments as objects (the
    templates iterate or `tojson` them), the rest as sent."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{"id": c.get("id"), "type": "function",
                      "function": {"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}}
                     for c in m["tool_calls"]]
            m = m | {"tool_calls": calls, "content": m.get("content") or ""}
        out.append(m)
    return out
