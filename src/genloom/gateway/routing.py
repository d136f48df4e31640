"""Which model answers: aliases (`default`, `fast`, `smart`) name a model, and a tiered route
sends simple requests to a cheaper model and hard ones to a stronger one by a complexity score.

The score is a pure function of the request, in [0, 1]: the larger of how long the prompt is
(against `long_prompt_chars`), how much output is asked for (against `long_max_tokens`), and
whether it names a keyword that marks hard work. A score at or above `threshold` is complex."""

from __future__ import annotations

from dataclasses import dataclass, replace

from genloom.config import RoutingSettings, TieredRoute


@dataclass(frozen=True)
class Route:
    model: str
    reason: str  # "direct", "alias default", "tiered auto: complex (0.83)"


def complexity(*, prompt: str, max_tokens: int, rule: TieredRoute) -> float:
    length = min(1.0, len(prompt) / rule.long_prompt_chars)
    output = min(1.0, max_tokens / rule.long_max_tokens)
    lowered = prompt.lower()
    keyword = 1.0 if any(k.lower() in lowered for k in rule.complex_keywords) else 0.0
    return max(length, output, keyword)


class Router:
    def __init__(self, *, settings: RoutingSettings) -> None:
        self._aliases = dict(settings.aliases)
        self._tiered = dict(settings.tiered)

    def names(self) -> list[str]:
        return [*self._aliases, *self._tiered]

    def route(self, model: str, *, prompt: str, max_tokens: int) -> Route:
        """Resolve aliases and tiered routes to a model name; other names pass through unchanged."""
        rule = self._tiered.get(model)
        if rule is not None:
            score = complexity(prompt=prompt, max_tokens=max_tokens, rule=rule)
            hard = score >= rule.threshold
            target = rule.complex if hard else rule.simple
            resolved = self.route(target, prompt=prompt, max_tokens=max_tokens)
            kind = "complex" if hard else "simple"
            return replace(resolved, reason=f"tiered {model}: {kind} ({score:.2f})")
        if model in self._aliases:
            return Route(self._aliases[model], f"alias {model}")
        return Route(model, "direct")
