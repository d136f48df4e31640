"""The guard stages on every kind of request, over HTTP with the official client: a guard that
blocks a word stops chat (plain and streamed), completions, async jobs, images and embeddings
with 400 content_blocked before anything is queued; an output guard stops an answer. (A
deployment's own scanners plug in beside the built-in ones, by name, as these do.)"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from genloom.guardrails.scan import Finding, Span
from genloom.runtimes.embeddings import builtin_embedding_model_path
from genloom.telemetry import RecordingObserver
from tests.api.conftest import running_server

WORD = "forbidden-word"


class WordScanner:
    name, categories = "word", ("test",)

    def scan(self, text: str) -> list[Finding]:
        at = text.find(WORD)
        return [Finding(self.name, "test", 1.0 if at >= 0 else 0.0, (Span(at, at + len(WORD), "WORD"),) if at >= 0 else ())]


class AnythingScanner:
    """Finds every answer (the tiny random model's text cannot be foreseen)."""

    name, categories = "anything", ("test",)

    def scan(self, text: str) -> list[Finding]:
        return [Finding(self.name, "test", 1.0 if text else 0.0)]


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, tiny_image_model_dir) -> Iterator[tuple[str, RecordingObserver]]:
    observer = RecordingObserver()
    models = [{"name": "tiny", "path": str(tiny_model_dir)},
              {"name": "tiny-sd", "path": str(tiny_image_model_dir), "kind": "image", "default_steps": 2},
              {"name": "all-minilm-l6-v2", "kind": "embedding", "path": str(builtin_embedding_model_path())}]
    with running_server(tmp_path_factory.mktemp("guards"), tiny_model_dir, models=models, observer=observer,
                        scanners={"word": WordScanner()}, guardrails={"input": {"word": {"action": "block"}}}) as (url, _):
        yield url, observer


@pytest.fixture()
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served[0]}/v1", api_key="unused", max_retries=0)


def blocked(call, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        call()
    assert refused.value.code == "content_blocked" and refused.value.param == param
    assert "blocked by the word guard (test)" in refused.value.message


def test_a_blocked_input_is_refused_for_every_kind_of_request(client, served):
    said = [{"role": "user", "content": f"please say {WORD}"}]
    blocked(lambda: client.chat.completions.create(model="tiny", messages=said, max_tokens=2), "messages")
    blocked(lambda: list(client.chat.completions.create(model="tiny", messages=said, max_tokens=2, stream=True)), "messages")
    blocked(lambda: client.completions.create(model="tiny", prompt=f"say {WORD}", max_tokens=2), "prompt")
    blocked(lambda: client.images.generate(model="tiny-sd", prompt=f"a {WORD} on a red background"), "prompt")
    blocked(lambda: client.embeddings.create(model="all-minilm-l6-v2", input=["fine", f"not {WORD}"]), "input")
    job = httpx.post(f"{served[0]}/v1/jobs", json={"url": "/v1/chat/completions",
                                                   "body": {"model": "tiny", "messages": said, "max_tokens": 2}})
    assert job.status_code == 400 and job.json()["error"]["code"] == "content_blocked"
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2).choices


def test_an_output_guard_stops_the_answer(tmp_path, tiny_model_dir):
    with running_server(tmp_path, tiny_model_dir, scanners={"anything": AnythingScanner()},
                        guardrails={"output": {"anything": {"action": "block"}}}) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        said = [{"role": "user", "content": "hi"}]
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="tiny", messages=said, max_tokens=4, temperature=1.0, seed=3)
        assert refused.value.code == "content_blocked" and refused.value.param is None
        # Seeded: the random model could end at once, and an empty answer holds nothing to block.
        stream = client.chat.completions.create(model="tiny", messages=said, max_tokens=4, temperature=1.0, seed=3,
                                                stream=True)
        with pytest.raises(openai.APIError) as ended:
            list(stream)
        assert "blocked by the anything guard" in str(ended.value)


def test_images_and_embeddings_report_to_the_observer(client, served):
    _, observer = served
    observer.calls.clear()
    image = client.images.with_raw_response.generate(model="tiny-sd", prompt="a red circle")
    vectors = client.embeddings.with_raw_response.create(model="all-minilm-l6-v2", input="hello")
    assert image.headers["x-genloom-model-version"] == "tiny-sd@v1"
    assert vectors.headers["x-genloom-model-version"] == "all-minilm-l6-v2@v1"
    finished = {c["route"]: c for c in observer.named("request_finished")}
    assert finished["/v1/images/generations"]["version"] == "tiny-sd@v1" and finished["/v1/images/generations"]["status"] == "completed"
    assert finished["/v1/embeddings"]["version"] == "all-minilm-l6-v2@v1"
    assert {(c["stage"], c["action"]) for c in observer.named("guard_decision")} == {("input", "allow")}
    assert {c["model"] for c in observer.named("batch_formed")} >= {"tiny-sd@v1", "all-minilm-l6-v2@v1"}
