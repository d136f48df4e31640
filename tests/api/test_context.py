"""The context a model really handles: a config or registry field below its config's positions,
and the built-in model's own (it was trained on 256-token windows although its positions go to
1024), reported on /v1/models and enforced on every request."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

import genloom
from genloom.config import RuntimeSettings
from genloom.runtimes.text import TextRuntime
from tests.api.conftest import running_server

BUILTIN = Path(genloom.__file__).parent / "builtin" / "models" / "genloom-text-mini"


def test_the_builtin_model_says_it_handles_the_windows_it_was_trained_on():
    runtime = TextRuntime(name="genloom-text-mini", path=BUILTIN, settings=RuntimeSettings(), load_weights=False)
    assert runtime.max_context == runtime.info.max_context == 256


def test_a_configured_context_is_reported_and_enforced(tmp_path, tiny_model_dir):
    models = [{"name": "tiny", "path": str(tiny_model_dir), "max_context": 64}]
    with running_server(tmp_path, tiny_model_dir, models=models) as (base, _):
        listed = {m["id"]: m for m in httpx.get(f"{base}/v1/models").json()["data"]}
        assert listed["tiny"]["max_context"] == 64
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=80)
        assert refused.value.body["param"] == "max_tokens" and "at most 64 tokens" in refused.value.body["message"]
        # Without max_tokens the default fits what is left of the 64; the answer stops there at the latest.
        answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                extra_body={"ignore_eos": True})
        assert answer.usage.prompt_tokens + answer.usage.completion_tokens <= 64


def test_a_context_beyond_the_models_positions_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="more than its max_position_embeddings"):
        TextRuntime(name="tiny", path=tiny_model_dir, settings=RuntimeSettings(), load_weights=False, max_context=100_000)
