"""/v1/embeddings through the official openai client, over real HTTP, batched by a real worker
on the built-in all-MiniLM-L6-v2."""

from __future__ import annotations

import base64
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
import uvicorn
from fastapi import Depends, FastAPI

from genloom.api.callers import authentication
from genloom.api.errors import install_error_handlers
from genloom.api.routes_embeddings import build_embeddings_router
from genloom.config import AuthMode, ClassificationSettings
from genloom.gateway import Readiness, ServerState
from genloom.gateway.embedding_service import EmbeddingRequest, EmbeddingService
from genloom.queue import InMemoryQueue, SchedulerPolicy
from genloom.jobs import EmbeddingsReady, EmbeddingTask, Job, JobFailed
from genloom.runtimes.embeddings import EmbeddingBatch, EmbeddingRuntime, builtin_embedding_model_path
from genloom.worker.embedding_worker import EmbeddingWorker
from tests.conftest import free_port

MODEL = "all-minilm-l6-v2"
MODEL_PATH = builtin_embedding_model_path()  # a dependency: None would be a broken install, and fails below


class GatedRuntime:
    """The real runtime, with a gate that can hold the worker inside `embed` and a record of
    every batch's texts, so a test can line requests up and see how they were batched."""

    def __init__(self, runtime: EmbeddingRuntime) -> None:
        self._runtime = runtime
        self.name, self.info = runtime.name, runtime.info
        self.open = threading.Event()
        self.open.set()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        self.batches.append(list(texts))
        self.entered.set()
        assert self.open.wait(30), "the test never opened the gate"
        return self._runtime.embed(texts)


class BrokenRuntime:
    """A model whose every forward pass fails."""

    def __init__(self, name: str, like: EmbeddingRuntime) -> None:
        self.name, self.info = name, like.info

    def embed(self, texts: list[str]) -> EmbeddingBatch:
        raise RuntimeError("CUDA error: device-side assert triggered")


@dataclass
class Stack:
    base_url: str
    runtime: EmbeddingRuntime
    gated: GatedRuntime
    queue: InMemoryQueue
    readiness: Readiness
    service: EmbeddingService
    workers: list[EmbeddingWorker]


@pytest.fixture(scope="module")
def real_runtime() -> EmbeddingRuntime:
    assert MODEL_PATH is not None
    return EmbeddingRuntime(name=MODEL, path=MODEL_PATH)


@pytest.fixture(scope="module")
def stack(real_runtime) -> Iterator[Stack]:
    gated = GatedRuntime(real_runtime)
    broken = BrokenRuntime("broken", real_runtime)
    queue = InMemoryQueue(policy=SchedulerPolicy())
    readiness = Readiness()
    readiness.set(ServerState.READY)
    runtimes = {MODEL: gated, "broken": broken}  # stand-ins with EmbeddingRuntime's name, info and embed
    service = EmbeddingService(runtimes=runtimes, queue=queue, readiness=readiness)  # type: ignore[arg-type]
    workers = [EmbeddingWorker(runtime=r, queue=queue) for r in (gated, broken)]  # type: ignore[arg-type]
    classification = ClassificationSettings()
    # With auth disabled every caller is an anonymous admin and the authenticator is never consulted.
    authenticate = authentication(
        mode=AuthMode.DISABLED, authenticator=None, classification=classification  # type: ignore[arg-type]
    )
    app = FastAPI()
    app.include_router(build_embeddings_router(service), dependencies=[Depends(authenticate)])
    install_error_handlers(app)
    for worker in workers:
        worker.start()
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not uv.started:
            if time.monotonic() > deadline:
                raise TimeoutError("the test server did not start")
            time.sleep(0.01)
        yield Stack(f"http://127.0.0.1:{port}", real_runtime, gated, queue, readiness, service, workers)
    finally:
        uv.should_exit = True
        thread.join(30)
        for job in queue.close():
            job.emit(JobFailed("the test server stopped", shutdown=True))
        for worker in workers:
            worker.stop(10)


@pytest.fixture()
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0)


def _close(a: list[float], b: list[float], tol: float = 1e-5) -> bool:
    return len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b, strict=True)) < tol


def test_float_embeddings_match_the_model_with_usage(client, stack):
    texts = ["a red circle", "the stock market fell"]
    reply = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert reply.object == "list" and reply.model == MODEL
    assert [d.index for d in reply.data] == [0, 1]
    assert all(d.object == "embedding" and len(d.embedding) == 384 for d in reply.data)
    expected = stack.runtime.embed(texts)
    assert all(_close(d.embedding, v) for d, v in zip(reply.data, expected.vectors, strict=True))
    assert reply.usage.prompt_tokens == sum(expected.token_counts) > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens


def test_base64_is_little_endian_float32_and_the_client_decodes_it_by_default(client):
    texts = ["a red circle", "a crimson circle"]
    floats = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    # Without encoding_format the client asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model=MODEL, input=texts)
    # With encoding_format="base64" it hands the string over as it came.
    raw = client.embeddings.create(model=MODEL, input=texts, encoding_format="base64")
    for f, d, r in zip(floats.data, decoded.data, raw.data, strict=True):
        assert isinstance(r.embedding, str)
        unpacked = list(struct.unpack("<384f", base64.b64decode(r.embedding)))
        assert _close(d.embedding, f.embedding) and _close(unpacked, f.embedding)


def test_a_single_string_gives_one_embedding(client):
    reply = client.embeddings.create(model=MODEL, input="a red circle", dimensions=384, encoding_format="float")
    assert len(reply.data) == 1 and len(reply.data[0].embedding) == 384


def test_more_inputs_than_a_batch_holds_are_answered(client):
    texts = [f"sentence number {i}" for i in range(100)]  # the worker's batch holds 64 texts
    reply = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in reply.data] == list(range(100))


def test_unknown_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.embeddings.create(model="text-embedding-3-small", input="hello")
    assert e.value.code == "model_not_found" and MODEL in e.value.message


@pytest.mark.parametrize("input", ["", [], ["fine", ""]])
def test_empty_input_is_400_on_input(client, input):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=input)
    assert e.value.param == "input"


def test_token_id_input_is_refused_in_words(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=[[101, 7592, 102]])
    assert e.value.param == "input" and "token ids" in e.value.message


def test_too_many_inputs_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input=["x"] * 2049)
    assert e.value.param == "input" and "2048" in e.value.message


def test_other_dimensions_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input="hello", dimensions=128)
    assert e.value.param == "dimensions" and "384" in e.value.message


def test_unknown_fields_are_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=MODEL, input="hello", extra_body={"truncate": True})
    assert e.value.param == "truncate"


def test_not_ready_is_503(client, stack):
    stack.readiness.set(ServerState.STARTING, "loading models")
    try:
        with pytest.raises(openai.InternalServerError) as e:
            client.embeddings.create(model=MODEL, input="hello")
        assert e.value.status_code == 503
    finally:
        stack.readiness.set(ServerState.READY)


def test_concurrent_requests_share_one_batch_and_each_gets_its_own_vectors(client, stack):
    inputs = [[f"request {i} text {j}" for j in range(i % 3 + 1)] for i in range(8)]
    alone = [client.embeddings.create(model=MODEL, input=texts, encoding_format="float") for texts in inputs]
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        results[i] = client.embeddings.create(model=MODEL, input=inputs[i], encoding_format="float")

    # Hold the worker inside one batch while the eight requests line up behind it.
    stack.gated.open.clear()
    stack.gated.entered.clear()
    blocker = threading.Thread(target=client.embeddings.create, kwargs={"model": MODEL, "input": "hold"})
    threads = [threading.Thread(target=call, args=(i,)) for i in range(8)]
    try:
        blocker.start()
        assert stack.gated.entered.wait(10)
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while stack.queue.depth(model=MODEL) < 8:
            assert time.monotonic() < deadline, "the requests did not reach the queue"
            time.sleep(0.01)
        batches_before = len(stack.gated.batches)
    finally:
        stack.gated.open.set()
    for t in (blocker, *threads):
        t.join(30)
    assert len(stack.gated.batches) == batches_before + 1  # all eight in one forward batch
    assert sorted(stack.gated.batches[-1]) == sorted(text for texts in inputs for text in texts)
    for i, texts in enumerate(inputs):
        assert len(results[i].data) == len(texts)
        for got, want in zip(results[i].data, alone[i].data, strict=True):
            assert _close(got.embedding, want.embedding)
        assert results[i].usage.prompt_tokens == alone[i].usage.prompt_tokens


def test_a_failing_model_is_500_and_its_worker_keeps_serving(client, stack):
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as e:
            client.embeddings.create(model="broken", input="hello")
        assert e.value.status_code == 500 and e.value.code == "generation_failed"
        assert "RuntimeError" in e.value.message and "CUDA" not in e.value.message
    assert all(worker.alive for worker in stack.workers)


async def test_a_client_that_leaves_gets_its_job_cancelled_before_it_runs(client, stack):
    stack.gated.open.clear()
    stack.gated.entered.clear()
    held = threading.Thread(target=client.embeddings.create, kwargs={"model": MODEL, "input": "hold"})
    try:
        held.start()
        assert stack.gated.entered.wait(10)
        batches_before = len(stack.gated.batches)

        async def gone() -> bool:
            return True

        request = EmbeddingRequest(model=MODEL, input=["never embedded"])
        assert await stack.service.embed(request, gone) is None
        assert stack.queue.depth(model=MODEL) == 0
    finally:
        stack.gated.open.set()
    held.join(30)
    time.sleep(0.2)  # time enough for the worker to take the job, had it stayed queued
    assert len(stack.gated.batches) == batches_before
    assert stack.service.in_flight == 0


def test_burst_mode_answers_each_job_once_from_one_batch(real_runtime):
    queue = InMemoryQueue(policy=SchedulerPolicy())
    worker = EmbeddingWorker(runtime=real_runtime, queue=queue)
    events: dict[str, list[object]] = {"a": [], "b": []}
    for name, texts in (("a", ("one", "two")), ("b", ("three",))):
        queue.submit(Job(id=name, model=MODEL, payload=EmbeddingTask(texts), emit=events[name].append, rows=len(texts)))
    assert worker.run_burst() == 2
    assert worker.batches == 1
    (a,), (b,) = events["a"], events["b"]
    assert isinstance(a, EmbeddingsReady) and isinstance(b, EmbeddingsReady)
    assert len(a.vectors) == 2 and len(b.vectors) == 1
    assert _close(b.vectors[0], real_runtime.embed(["three"]).vectors[0])
