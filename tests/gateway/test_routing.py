"""Aliases and tiered routing: a pure policy over the request."""

from __future__ import annotations

import pytest

from genloom.config import ConfigError, RoutingSettings, TieredRoute, load_settings
from genloom.gateway.routing import Router, complexity

RULE = TieredRoute(simple="small", complex="large", threshold=0.5, long_prompt_chars=100, long_max_tokens=200,
                   complex_keywords=["prove"])


def router() -> Router:
    return Router(settings=RoutingSettings(aliases={"default": "small", "smart": "large"}, tiered={"auto": RULE}))


def test_an_alias_names_its_model_and_other_names_pass_through():
    assert router().route("default", prompt="hi", max_tokens=5).model == "small"
    assert router().route("large", prompt="hi", max_tokens=5).reason == "direct"


@pytest.mark.parametrize(
    ("prompt", "max_tokens", "model"),
    [("hi", 10, "small"), ("x" * 100, 10, "large"), ("hi", 200, "large"), ("Please PROVE it", 10, "large"),
     ("x" * 49, 99, "small")],
)
def test_tiered_route_sends_simple_requests_to_the_cheap_model_and_hard_ones_to_the_strong(prompt, max_tokens, model):
    route = router().route("auto", prompt=prompt, max_tokens=max_tokens)
    assert route.model == model and route.reason.startswith("tiered auto: ")


def test_complexity_is_the_largest_signal_in_zero_to_one():
    assert complexity(prompt="x" * 50, max_tokens=20, rule=RULE) == pytest.approx(0.5)
    assert complexity(prompt="x" * 500, max_tokens=2000, rule=RULE) == 1.0


def test_a_tiered_route_may_point_at_an_alias():
    settings = RoutingSettings(aliases={"fast": "small"}, tiered={"auto": TieredRoute(simple="fast", complex="large")})
    assert Router(settings=settings).route("auto", prompt="hi", max_tokens=1).model == "small"


def test_routing_config_must_name_served_models(tmp_path, tiny_model_dir):
    config = tmp_path / "genloom.yaml"
    config.write_text(f"builtin_models: false\nmodels:\n  - name: tiny\n    path: {tiny_model_dir}\n"
                      "routing:\n  aliases:\n    default: missing\n")
    with pytest.raises(ConfigError, match="missing"):
        load_settings(config)
    config.write_text(f"builtin_models: false\nmodels:\n  - name: tiny\n    path: {tiny_model_dir}\n"
                      "routing:\n  aliases:\n    tiny: tiny\n")
    with pytest.raises(ConfigError, match="both a model and an alias"):
        load_settings(config)
