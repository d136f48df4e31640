"""Runs queued text jobs on a remote OpenAI-compatible upstream.

Like TextWorker it takes jobs from the queue (a job's rows are its choices; `max_concurrency`
rows are in flight at once) and reports through `job.emit`, so the scheduler decides the order
for remote models too. The HTTP calls run on this worker's own event loop, in its own thread."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import httpx

from genloom.jobs import ChoiceFinished, Job, JobFailed, JobStarted, PromptCounted, RemoteTask, TokenEvent
from genloom.queue.protocol import JobQueue, QueueUnavailable
from genloom.runtimes.remote import RemoteTextUpstream, StreamBroken, UpstreamError, UpstreamRejected, UpstreamSettings
from genloom.worker.base import SHUTDOWN_MESSAGE, Worker

log = logging.getLogger("genloom.worker")


class RemoteWorker(Worker):
    kind = "remote"

    def __init__(
        self, *, settings: UpstreamSettings, queue: JobQueue, max_concurrency: int = 64, idle_wait_s: float = 0.1,
        transport: Callable[[httpx.Limits], httpx.AsyncBaseTransport] | None = None,
    ) -> None:
        """`transport(limits)` builds the connection layer of its HTTP client (model_host: the
        SSRF guard of an upstream registered through the API); None: httpx's own."""
        super().__init__(model=settings.name, queue=queue, idle_wait_s=idle_wait_s)
        self._settings = settings
        self._transport = transport
        self._max_concurrency = max_concurrency
        self._busy_rows = 0

    @property
    def busy(self) -> bool:
        return self._busy_rows > 0

    @property
    def occupancy(self) -> int:
        return self._busy_rows

    @property
    def capacity(self) -> int:
        return self._max_concurrency

    def _loop(self) -> None:
        asyncio.run(self._serve())

    def _round(self, wait_s: float) -> int | None:
        """Burst mode: the calls for what is queued now, run together to their end."""
        jobs = self._took(self._queue.take([self.model], max_rows=self._max_concurrency, timeout=wait_s))
        if not jobs:
            return None

        async def run_all() -> None:
            async with self._client() as client:
                upstream = RemoteTextUpstream(settings=self._settings, client=client)
                for job in jobs:
                    self._busy_rows += job.rows
                await asyncio.gather(*(self._call(upstream, job) for job in jobs))

        asyncio.run(run_all())
        return len(jobs)

    def _client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self._max_concurrency, max_keepalive_connections=self._max_concurrency)
        if self._transport is not None:
            return httpx.AsyncClient(transport=self._transport(limits), trust_env=False)
        return httpx.AsyncClient(limits=limits, trust_env=False)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not self._stop.is_set():
            try:
                # Woken when a job is queued for this model (or a call ends and frees rows), not by polling.
                self._queue.watch(self.model, lambda: loop.call_soon_threadsafe(self._wake.set))
                break
            except Exception as e:  # the queue's Redis away at start: try again, as every round does
                await asyncio.sleep(self._queue_away(QueueUnavailable(str(e))))
        async with self._client() as client:
            upstream = RemoteTextUpstream(settings=self._settings, client=client)
            running: set[asyncio.Task] = set()
            while not self._stop.is_set():
                self._last_round = self._clock()
                self._wake.clear()
                free = self._max_concurrency - self._busy_rows
                try:
                    jobs = self._took(self._queue.take([self.model], max_rows=free, timeout=0)) if free > 0 else []
                except QueueUnavailable as e:  # calls running go on; new ones wait for the queue
                    await asyncio.sleep(self._queue_away(e))
                    continue
                except Exception:  # the loop must outlive any one round (each call answers its own job)
                    log.exception("remote worker for %s: a round failed", self.model)
                    await asyncio.sleep(1.0)
                    continue
                self._queue_back()
                for job in jobs:
                    self._busy_rows += job.rows
                    task = asyncio.create_task(self._call(upstream, job))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if not jobs:
                    with suppress(TimeoutError):  # also to notice stop() and jobs whose backoff ended
                        await asyncio.wait_for(self._wake.wait(), self._idle_wait_s)
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _fail_held(self, message: str, shutdown: bool = False) -> None:
        pass  # every call answers its own job, also when it is cancelled at the end

    async def _call(self, upstream: RemoteTextUpstream, job: Job) -> None:
        task: RemoteTask = job.payload
        job.emit(JobStarted())
        tokens: dict[int, int] = {}
        try:
            if not task.stream:
                self._emit_answer(job, await upstream.complete(task.path, _without_streaming(task.body)))
                return
            # Finish events wait for the end of the stream: the usage chunk comes after the last
            # finish_reason, and its completion count replaces our one-token-per-chunk estimate.
            finished: dict[int, str] = {}
            usage: dict[str, Any] = {}
            async for chunk in upstream.stream(task.path, task.body):
                if job.cancelled:
                    return
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    index = int(choice.get("index", 0))
                    text = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
                    if text:
                        tokens[index] = tokens.get(index, 0) + 1
                        job.emit(TokenEvent(index, text, tokens[index]))
                    if choice.get("finish_reason"):
                        finished[index] = choice["finish_reason"]
            if usage.get("prompt_tokens") is not None:
                job.emit(PromptCounted(int(usage["prompt_tokens"])))
            if usage.get("completion_tokens") is not None and job.rows == 1:
                tokens[0] = int(usage["completion_tokens"])
            for index in range(job.rows):  # "stop" for an upstream that ends without saying why
                job.emit(ChoiceFinished(index, finished.get(index, "stop"), tokens.get(index, 0)))
        except asyncio.CancelledError:
            job.emit(JobFailed(SHUTDOWN_MESSAGE, retryable=True, shutdown=True))
            raise
        except StreamBroken as e:
            job.emit(JobFailed(str(e), retryable=False))
        except UpstreamRejected as e:
            job.emit(JobFailed(str(e.error.get("message") or e), rejected=True))
        except UpstreamError as e:
            # Nothing reached the client yet: the gateway may try the next model of the fallback chain.
            job.emit(JobFailed(str(e), retryable=e.retryable, before_output=not e.request_at_fault))
        except Exception as e:  # a bug here must not kill the worker or strand the client
            log.exception("remote call to %s failed", self.model)
            job.emit(JobFailed(f"the call to {self.model} failed: {type(e).__name__}", before_output=not tokens))
        finally:
            self._busy_rows -= job.rows
            self._queue.finish(job)
            self._wake.set()

    @staticmethod
    def _emit_answer(job: Job, answer: dict[str, Any]) -> None:
        """A whole JSON answer as the events a stream would have given."""
        usage = answer.get("usage") or {}
        if usage.get("prompt_tokens") is not None:
            job.emit(PromptCounted(int(usage["prompt_tokens"])))
        choices = answer.get("choices") or []
        for choice in choices:
            index = int(choice.get("index", 0))
            text = (choice.get("message") or {}).get("content") if "message" in choice else choice.get("text")
            # Usage counts all choices together; one choice (the usual case) gets the exact figure.
            tokens = int(usage.get("completion_tokens") or 0) if len(choices) == 1 else len(text or "") // 4
            if text:
                job.emit(TokenEvent(index, text, tokens))
            job.emit(ChoiceFinished(index, choice.get("finish_reason") or "stop", tokens))


def _without_streaming(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key != "stream_options"}
