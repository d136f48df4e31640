"""How deeply a JSON text nests, measured while it arrives and before anything parses it: a
parser, and any code that walks what it parsed, recurses once per level, so `[[[[...]]]]` ten
thousand deep would end in a RecursionError (a 500) instead of a clear 400."""

from __future__ import annotations

import re

DEFAULT_MAX_JSON_DEPTH = 64

_STRUCTURE = re.compile(rb'[\[\]{}"\\]')
_OPEN, _CLOSE, _QUOTE, _BACKSLASH = frozenset(b"[{"), frozenset(b"]}"), ord('"'), ord("\\")


class JsonTooDeep(ValueError):
    """A JSON text nests arrays and objects deeper than the limit."""

    def __init__(self, limit: int, what: str = "the request body") -> None:
        super().__init__(f"{what} nests JSON arrays and objects more than {limit} levels deep; flatten it")
        self.limit = limit


class JsonNesting:
    """Feed a JSON text in pieces; `deepest` is the most arrays and objects open at once.
    Brackets inside strings do not count; the text is not otherwise validated."""

    def __init__(self) -> None:
        self.depth = 0
        self.deepest = 0
        self._in_string = False
        self._escape_pending = False  # the piece ended with a backslash inside a string

    def feed(self, data: bytes) -> int:
        if not data:
            return self.deepest
        escaped_at = 0 if self._escape_pending else -1
        self._escape_pending = False
        for match in _STRUCTURE.finditer(data):
            at = match.start()
            if at == escaped_at:
                continue
            char = data[at]
            if self._in_string:
                if char == _BACKSLASH:
                    escaped_at = at + 1
                    self._escape_pending = escaped_at == len(data)
                elif char == _QUOTE:
                    self._in_string = False
            elif char == _QUOTE:
                self._in_string = True
            elif char in _OPEN:
                self.depth += 1
                self.deepest = max(self.deepest, self.depth)
            elif char in _CLOSE:
                self.depth -= 1
        return self.deepest


def json_depth(text: str | bytes) -> int:
    """The most arrays and objects open at once in a whole JSON text."""
    return JsonNesting().feed(text.encode() if isinstance(text, str) else text)
