"""Job payloads and events as JSON, for queues that cross processes (the Redis backend).

Any dataclass from a genloom module round-trips, recursively, with its tuples, bytes, enums and
dicts intact: a worker process gets back the very TextTask or ImageTask the API built, and the
API the very TokenEvent the worker emitted. Only genloom's own types are ever rebuilt, so a
message from the queue cannot name an arbitrary class to construct."""

from __future__ import annotations

import base64
import dataclasses
import importlib
import json
from enum import Enum
from typing import Any


class CodecError(ValueError):
    """A message that does not decode to one of genloom's types."""


def dumps(value: Any) -> str:
    return json.dumps(_encode(value), separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    return _decode(json.loads(text))


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)) and not isinstance(value, Enum):
        return value
    if isinstance(value, Enum):
        return {"__e": _name(type(value)), "v": value.value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        return {"__t": _name(type(value)), "f": fields}
    if isinstance(value, (bytes, bytearray)):
        return {"__b": base64.b64encode(value).decode()}
    if isinstance(value, tuple):
        return {"__tu": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {"__d": [[_encode(k), _encode(v)] for k, v in value.items()]}
    raise TypeError(f"cannot send a {type(value).__name__} through the queue")


def _type(name: str) -> type:
    module, _, qualname = name.partition(":")
    if not (module == "genloom" or module.startswith("genloom.")):
        raise CodecError(f"refusing to build {name!r}: not a genloom type")
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError) as e:
        raise CodecError(f"unknown type {name!r}") from e
    if not isinstance(found, type):
        raise CodecError(f"{name!r} is not a type")
    return found


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__t" in value:
        cls = _type(value["__t"])
        if not dataclasses.is_dataclass(cls):
            raise CodecError(f"{value['__t']!r} is not a dataclass")
        return cls(**{k: _decode(v) for k, v in value["f"].items()})
    if "__e" in value:
        cls = _type(value["__e"])
        if not issubclass(cls, Enum):
            raise CodecError(f"{value['__e']!r} is not an enum")
        return cls(value["v"])
    if "__b" in value:
        return base64.b64decode(value["__b"])
    if "__tu" in value:
        return tuple(_decode(v) for v in value["__tu"])
    if "__d" in value:
        return {_decode(k): _decode(v) for k, v in value["__d"]}
    raise CodecError(f"not a genloom message: {value!r:.80}")
