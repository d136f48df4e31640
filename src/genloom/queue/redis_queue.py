"""The shared queue: the same interface and scheduling policy as `InMemoryQueue`, kept in Redis
so any number of API replicas submit to it and any number of worker processes take from it.

The policy runs inside Redis (redis_queue.lua, one script call per operation), so every pick is
atomic across hosts. A taken job is held under a lease that this process's keeper thread renews;
when a holder dies its lease runs out and `reclaim` puts the job back in line (at least once),
or among the dead letters after `max_deliveries` deliveries. A job submitted with a waiting
client carries a reply stream: the worker's events travel there (XADD, in order) and this
process's reader hands them to the job's `emit`. Cancelling a job reaches the worker holding it
on any host: the job is flagged and announced on a channel that every worker listens to.

Payloads and events cross processes as JSON (queue/codec.py)."""

from __future__ import annotations

import json
import logging
import math
import os
import queue as stdlib_queue
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis

from genloom.jobs import (
    ChoiceFinished,
    codec,
    Job,
    JobEvent,
    JobFailed,
    JobStarted,
    PromptCounted,
    RequestClass,
    Tier,
    TokenEvent,
    Traced,
)
from genloom.queue.protocol import UNREACHABLE, QueueClosed, QueueUnavailable, Reservation
from genloom.queue.scheduler import Entry, QueueFull, Scheduler, SchedulerPolicy, TenantQueueFull

log = logging.getLogger("genloom.queue")
_SCRIPT = resources.files("genloom.queue").joinpath("redis_queue.lua").read_text()
_RESERVATION_TTL_S = 60.0  # a place held by a replica that died is given back after this
_KEEPER_TICK_S = 0.2
_RECLAIM_EVERY_S = 1.0
_INBOX_MAXLEN = 100_000
# A replica's reply stream lives while the replica renews it. Once it is gone (the replica died),
# workers' events to it fail (NOMKSTREAM) and they drop its requests: nobody waits for them.
_INBOX_TTL_S = 120
_INBOX_RENEW_S = 30.0


@dataclass(frozen=True)
class Reclaimed:
    """What `reclaim` did with a job whose lease ran out: requeued, dead (letter), lost (its
    waiting client was told), or cancelled (dropped)."""

    job_id: str
    outcome: str


Adopt = Callable[[Job], Callable[[JobEvent], None]]


class RedisQueue:
    backend = "redis"
    blocking = True

    def __init__(
        self,
        *,
        client: redis.Redis,
        policy: SchedulerPolicy,
        prefix: str = "genloom:",
        owner: str | None = None,
        lease_s: float = 30.0,
        max_deliveries: int = 5,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        position_ttl_s: float = 0.5,
        adopt: Adopt | None = None,
    ) -> None:
        """`client` must decode responses (decode_responses=True). `adopt` gives an `emit` for a
        taken job that has no reply stream (an async job: its bookkeeping runs where it runs)."""
        if lease_s <= 0:
            raise ValueError(f"lease_s must be > 0, got {lease_s}")
        if max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {max_deliveries}")
        self._redis = client
        self._policy = policy
        self._policy_json = json.dumps({
            "tiers": {t.value: {"weight": p.weight, "max_wait_s": p.max_wait_s} for t, p in policy.tiers.items()},
            "max_queued": {c.value: n for c, n in policy.max_queued.items()},
            "tenant_limit": {c.value: policy.tenant_limit(c) for c in RequestClass},
        })
        self._prefix = prefix
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._inbox = f"{prefix}inbox:{self.owner}"
        self._lease_s = lease_s
        self._max_deliveries = max_deliveries
        self._clock = clock
        self._monotonic = monotonic
        self._position_ttl_s = position_ttl_s
        self._adopt = adopt
        self._script = client.register_script(_SCRIPT)
        self._lock = threading.Lock()
        self._closed = False
        self._stopping = threading.Event()
        # Realtime jobs submitted here, until their last event: the reader hands events to them.
        self._submitted: dict[str, _Waiting] = {}
        # Realtime jobs submitted here that are over (answered or cancelled): nothing to remove.
        self._settled: OrderedDict[str, None] = OrderedDict()
        self._held: dict[str, Job] = {}
        self._watchers: dict[str, list[Callable[[], None]]] = {}
        self._positions: dict[str, tuple[float, dict[str, int]]] = {}
        self._outbox: stdlib_queue.SimpleQueue[tuple[str, str, str] | None] = stdlib_queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._pubsub_thread: Any = None
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background threads (done on first use anyway): the keeper (leases, reclaim),
        the reader of this process's reply stream, the sender of events, and the channel listener."""
        with self._lock:
            if self._started:
                return
            self._started = True
        try:
            self._open_inbox()
        except redis.RedisError as e:  # the reader makes it at its first round
            log.warning("could not make this process's reply stream yet (%s)", e)
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(**{f"{self._prefix}cancel": self._on_cancel_message})
        except redis.RedisError as e:  # the listener's first read subscribes again (_pubsub_failed)
            log.warning("could not subscribe to the queue's cancel channel yet (%s)", e)
        self._pubsub_thread = pubsub.run_in_thread(sleep_time=0.5, daemon=True, exception_handler=self._pubsub_failed)
        for target, name in ((self._keep, "keeper"), (self._read_inbox, "reader"), (self._send_events, "sender")):
            thread = threading.Thread(target=target, name=f"genloom-redis-queue-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self) -> list[Job]:
        """Refuse new work here and hand back this process's realtime jobs still waiting (taken
        out of the shared line: their clients are on this process). Async jobs stay queued for
        other workers; jobs held by this process keep their leases until `stop`."""
        with self._lock:
            self._closed = True
        left = []
        for waiting in list(self._submitted.values()):
            try:
                removed = self._call("remove", waiting.job.id) == 1
            except QueueUnavailable as e:  # Redis away: its client is told by its wait bound or by the drain
                log.warning("could not take job %s out of the queue while closing: %s", waiting.job.id, e)
                continue
            if removed:
                self._submitted.pop(waiting.job.id, None)
                left.append(waiting.job)
        return left

    def stop(self) -> None:
        """Stop the background threads; jobs still held are left to their leases (reclaimed later)."""
        self._stopping.set()
        self._outbox.put(None)
        for thread in self._threads:
            thread.join(5)
        if self._pubsub_thread is not None:
            self._pubsub_thread.stop()
            self._pubsub_thread.join(2)
        try:
            self._redis.delete(self._inbox)
        except redis.RedisError as e:  # it expires by itself
            log.warning("could not delete this process's reply stream: %s", e)

    # -- submitting ---------------------------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Admit a new job or raise QueueFull (503) / TenantQueueFull (429)."""
        self._add(job, admit=True)

    def restore(self, job: Job) -> None:
        """Queue an accepted job again without admission; a job already in the queue (waiting
        or running anywhere) is left as it is, so recovery sweeps can run on every process."""
        self._add(job, admit=False)

    def requeue(self, job: Job) -> None:
        """Queue a job again that is to be retried: unlike `restore`, a copy still marked running
        (its holder failed it, or lost its lease) or dead is replaced."""
        self._add(job, admit=False, requeue=True)

    def _add(self, job: Job, *, admit: bool, requeue: bool = False) -> None:
        if self._closed and admit:  # an accepted job may still be put back for other processes
            raise QueueClosed("the server is shutting down")
        self.start()
        now, mono = self._clock(), self._monotonic()
        arrived = now - max(0.0, mono - job.enqueued_at)
        not_before = now + (job.not_before - mono) if job.not_before > mono else 0.0
        reply = self._inbox if job.request_class is RequestClass.REALTIME else ""
        # A realtime request tries again under the same id (another model of its fallback chain):
        # its failed attempt may still be marked running until that worker's finish arrives.
        requeue = requeue or bool(reply)
        if reply:
            self._submitted[job.id] = _Waiting(job)  # before the script: a fast worker may answer at once
        answer = self._call(
            "submit", job.id, job.model, job.request_class.value, job.tier.value, job.tenant, repr(float(job.cost)),
            job.rows, repr(arrived), repr(not_before), codec.dumps(_carried(job)), reply, "1" if admit else "0",
            "1" if requeue else "0", now=now,
        )
        if answer[0] != "ok":
            if reply and answer[0] != "exists":
                self._submitted.pop(job.id, None)
            self._refused(answer, job.request_class, job.tenant)
            if answer[0] == "exists" and admit:
                raise ValueError(f"a job with id {job.id!r} is already queued")
            return
        job_id = job.id

        def cancelled() -> None:
            # Every request cancels its job when it ends; only one not answered yet is in Redis.
            waiting = self._submitted.pop(job_id, None)
            self._settle(job_id)
            if waiting is not None:
                self._call("remove", job_id)

        job.on_cancel(cancelled)

    def _refused(self, answer: list, request_class: RequestClass, tenant: str) -> None:
        if answer[0] == "full":
            raise QueueFull(request_class, int(answer[1]), self._policy.retry_after_s)
        if answer[0] == "tenant_full":
            raise TenantQueueFull(tenant, request_class, int(answer[1]), self._policy.retry_after_s)

    def reserve(self, *, model: str, request_class: RequestClass, tenant: str) -> Reservation:
        """Hold a place for a job being stored (see InMemoryQueue.reserve). A place held by a
        process that dies is given back after a minute."""
        if self._closed:
            raise QueueClosed("the server is shutting down")
        reservation = Reservation(model=model, request_class=request_class, tenant=tenant, id=uuid.uuid4().hex)
        now = self._clock()
        answer = self._call(
            "reserve", model, request_class.value, tenant, reservation.id, repr(now + _RESERVATION_TTL_S), now=now
        )
        self._refused(answer, request_class, tenant)
        return reservation

    def release(self, reservation: Reservation) -> None:
        if reservation.released:
            return
        reservation.released = True
        try:
            self._call("release", reservation.model, reservation.request_class.value, reservation.tenant, reservation.id)
        except QueueUnavailable as e:  # the place is given back anyway when its reservation expires
            log.warning("could not give back a reserved place: %s", e)

    def remove(self, job_id: str) -> Job | None:
        """Take a waiting job out of the line (cancellation); a running one is flagged so its
        worker drops it. Returns the local Job when it was waiting, else None."""
        with self._lock:
            if job_id in self._settled:  # a request of this replica's that is over: nothing queued
                return None
        waiting = self._submitted.pop(job_id, None)
        removed = self._call("remove", job_id) == 1
        if not removed:
            return None
        return waiting.job if waiting else Job(id=job_id, model="", payload=None, emit=_ignore)

    # -- taking -------------------------------------------------------------------------------

    def take(
        self, models: Iterable[str], *, max_rows: int, timeout: float, max_async_rows: int | None = None
    ) -> list[Job]:
        """Jobs for `models` in the scheduler's order (see InMemoryQueue.take), now held by this
        process under a lease until `finish`. Waits up to `timeout` seconds when none is ready."""
        models = tuple(models)
        if not models:
            return []
        if self._closed:  # draining: nothing more for this process; do not let a worker spin
            self._stopping.wait(timeout)
            return []
        self.start()
        async_rows = max_rows if max_async_rows is None else max_async_rows
        deadline = self._monotonic() + timeout
        tokens = [f"{self._prefix}wake:{model}" for model in models]
        while True:
            jobs, due = self._take_now(models, max_rows, async_rows)
            remaining = deadline - self._monotonic()
            if jobs or remaining <= 0 or self._closed:
                return jobs
            wait = min(remaining, 0.5)  # also picks up jobs reclaimed meanwhile
            if due is not None:  # a retry's backoff ends sooner
                wait = min(wait, max(0.0, due - self._clock()))
            if wait >= 0.01:  # BLPOP's resolution: shorter waits just take again
                self._wait_for_token(tokens, wait)

    def _wait_for_token(self, tokens: list[str], wait: float) -> None:
        """Block until a job for one of these models is queued (one waiting worker per job)."""
        with _reachable():
            self._redis.blpop(tokens, timeout=wait)

    def _take_now(self, models: tuple[str, ...], max_rows: int, max_async_rows: int) -> tuple[list[Job], float | None]:
        """What one take script call hands this process, and, when nothing, when the first job
        in retry backoff becomes eligible (None: none is)."""
        if max_rows <= 0 or self._closed:
            return [], None
        now = self._clock()
        rows, due = self._call(
            "take", self.owner, repr(now + self._lease_s), max_rows, max_async_rows, *models, now=now
        )
        return [self._held_job(*row) for row in rows], None if due is None else float(due)

    def _held_job(
        self, job_id: str, payload: str, reply: str, deliveries: int, model: str, request_class: str, tier: str,
        tenant: str, cost: str, rows: int,
    ) -> Job:
        carried, trace = codec.loads(payload), None
        if isinstance(carried, Traced):
            carried, trace = carried.payload, carried.trace
        job = Job(
            id=job_id, model=model, payload=carried, emit=_ignore, rows=int(rows),
            request_class=RequestClass(request_class), tier=Tier(tier), tenant=tenant, cost=float(cost),
            deliveries=int(deliveries), trace=trace,
        )
        if reply:
            job.emit = self._relay(reply, job_id)
        elif self._adopt is not None:
            job.emit = self._adopt(job)
        else:
            log.warning("job %s has no reply stream and this process adopts no async jobs", job_id)
        with self._lock:
            self._held[job_id] = job
        job.on_cancel(lambda: self.finish(job))  # dropped here: the queue forgets it
        return job

    def finish(self, job: Job) -> None:
        """The job is done on this process (answered, failed or dropped): it leaves the queue."""
        with self._lock:
            held = self._held.pop(job.id, None)
        if held is not None:
            self._outbox.put(("finish", job.id, ""))

    def watch(self, model: str, wake: Callable[[], None]) -> None:
        """Call `wake` (from another thread) when a job for `model` is queued, on any replica,
        for workers that wait on an event loop rather than in take(): a thread waits for them."""
        self.start()
        with self._lock:
            first = not self._watchers
            self._watchers.setdefault(model, []).append(wake)
        if first:
            thread = threading.Thread(target=self._watch, name="genloom-redis-queue-watcher", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                watched = {model: list(wakes) for model, wakes in self._watchers.items()}
            try:
                token = self._redis.blpop([f"{self._prefix}wake:{m}" for m in watched], timeout=0.5)
            except redis.RedisError as e:
                log.warning("the queue's watcher could not reach Redis (%s); retrying", e)
                self._stopping.wait(0.5)
                continue
            if token is not None:
                for wake in watched[token[0][len(f"{self._prefix}wake:"):]]:
                    wake()

    # -- reading the line ---------------------------------------------------------------------

    def depth(self, request_class: RequestClass | None = None, *, model: str | None = None) -> int:
        return int(self._call("depth", model or "", request_class.value if request_class else ""))

    def position(self, job_id: str) -> int | None:
        """1-based place in its model's line if nothing new arrived (worked out by the Python
        scheduler from a snapshot of the shared line, reused for `position_ttl_s`)."""
        model = self._redis.hget(f"{self._prefix}j:{job_id}", "m")
        if model is None:
            return None
        cached = self._positions.get(model)
        now = self._monotonic()
        if cached is None or now - cached[0] >= self._position_ttl_s or job_id not in cached[1]:
            order = self._snapshot(model).order()
            cached = self._positions[model] = (now, {id_: place for place, id_ in enumerate(order, start=1)})
        return cached[1].get(job_id)

    def _snapshot(self, model: str) -> Scheduler:
        now = self._clock()
        state, entries = self._call("snapshot", model, now=now)
        values = dict(zip(state[::2], state[1::2], strict=True))
        scheduler = Scheduler(policy=self._policy, clock=lambda: now)
        tenant_passes: dict[tuple[RequestClass, Tier, str], float] = {}
        for field, value in values.items():
            if field.startswith("tp:"):
                cls, tier, tenant = field[3:].split(":", 2)
                tenant_passes[(RequestClass(cls), Tier(tier), tenant)] = float(value)
        scheduler.resume(
            class_vtime={c: float(values.get(f"vt:{c.value}", 0)) for c in RequestClass},
            tier_passes={
                (c, t): (float(values.get(f"p:{c.value}:{t.value}", 0)), float(values.get(f"vt:{c.value}:{t.value}", 0)))
                for c in RequestClass for t in Tier
            },
            tenant_passes=tenant_passes,
        )
        for id_, cls, tier, tenant, cost, rows, at, nb, _seq in sorted(entries, key=lambda e: int(e[8])):
            scheduler.add(Entry(
                id=id_, request_class=RequestClass(cls), tier=Tier(tier), tenant=tenant, cost=float(cost),
                rows=int(rows), arrived_at=float(at), not_before=float(nb),
            ))
        return scheduler

    # -- failure handling ---------------------------------------------------------------------

    def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        """Deal with jobs whose holder stopped renewing its lease (see the module doc); any
        process may call it, each expired job is dealt with once."""
        lost = codec.dumps(JobFailed("the worker running this request stopped answering", retryable=True))
        out = self._call("reclaim", self._max_deliveries, limit, lost)
        reclaimed = [Reclaimed(job_id, outcome) for job_id, outcome in out]
        for r in reclaimed:
            log.warning("job %s: its worker's lease ran out; %s", r.job_id, r.outcome)
        return reclaimed

    def missing(self, job_ids: list[str]) -> set[str]:
        """Which of these jobs the shared queue does not hold (waiting, running or dead)."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.exists(f"{self._prefix}j:{job_id}")
        with _reachable():
            found = pipe.execute()
        return {job_id for job_id, there in zip(job_ids, found, strict=True) if not there}

    def dead_letters(self, limit: int = 100) -> list[str]:
        """Ids of jobs given up after `max_deliveries` deliveries, oldest first."""
        with _reachable():
            return list(self._redis.zrange(f"{self._prefix}dead", 0, limit - 1))

    def depths(self) -> dict[str, dict[RequestClass, int]]:
        """Waiting jobs per model and class, across every replica."""
        with _reachable():
            models = sorted(self._redis.smembers(f"{self._prefix}models"))
            pipe = self._redis.pipeline(transaction=False)
            for model in models:
                pipe.hmget(f"{self._prefix}m:{model}:st", *(f"d:{c.value}" for c in RequestClass))
            counts = pipe.execute()
        return {m: {c: int(n or 0) for c, n in zip(RequestClass, row, strict=True)} for m, row in zip(models, counts, strict=True)}

    # -- background threads -------------------------------------------------------------------

    def _keep(self) -> None:
        last_beat = last_reclaim = 0.0
        while not self._stopping.wait(_KEEPER_TICK_S):
            now = self._monotonic()
            try:
                if now - last_beat >= self._lease_s / 3:
                    last_beat = now
                    self._heartbeat()
                if now - last_reclaim >= _RECLAIM_EVERY_S:
                    last_reclaim = now
                    self.reclaim()
            except (redis.RedisError, QueueUnavailable) as e:
                log.warning("the queue's keeper could not reach Redis (%s); retrying", e)

    def _heartbeat(self) -> None:
        with self._lock:
            held = list(self._held.items())
        if not held:
            return
        states = self._call("heartbeat", self.owner, repr(self._clock() + self._lease_s), *[i for i, _ in held])
        for (job_id, job), state in zip(held, states, strict=True):
            if state == 0:
                log.warning("job %s: this worker's lease was lost; dropping it", job_id)
                with self._lock:
                    self._held.pop(job_id, None)
                job.cancel()
            elif state == 2:
                job.cancel()

    def _pubsub_failed(self, error: BaseException, pubsub: Any, thread: Any) -> None:
        """The channel listener lost Redis: listen again unless stopping (cancels are also polled)."""
        if self._stopping.is_set():
            thread.stop()
            return
        log.warning("lost the queue's Redis channels (%s); listening again", error)
        time.sleep(0.5)
        pubsub.reset()  # the thread's next read subscribes again on a new connection
        pubsub.subscribe(**{f"{self._prefix}cancel": self._on_cancel_message})

    def _on_cancel_message(self, message: dict) -> None:
        with self._lock:
            job = self._held.get(message["data"])
        if job is not None:
            job.cancel()

    def _relay(self, reply: str, job_id: str) -> Callable[[JobEvent], None]:
        def emit(event: JobEvent) -> None:
            self._outbox.put((reply, job_id, codec.dumps(event)))

        return emit

    def _send_events(self) -> None:
        """Events and finishes in the order they were made, many per round trip."""
        while True:
            item = self._outbox.get()
            batch = [item]
            while len(batch) < 512:
                try:
                    batch.append(self._outbox.get_nowait())
                except stdlib_queue.Empty:
                    break
            pipe = self._redis.pipeline(transaction=False)
            sent = [entry for entry in batch if entry is not None]
            for target, job_id, data in sent:
                if target == "finish":
                    self._script(keys=[self._prefix], args=["finish", self._policy_json, self._clock(), job_id, self.owner], client=pipe)
                else:
                    pipe.xadd(target, {"id": job_id, "e": data}, maxlen=_INBOX_MAXLEN, approximate=True, nomkstream=True)
            try:
                answers = pipe.execute()
            except redis.RedisError:
                log.exception("could not send %d job events to Redis", len(batch))
                answers = []
            for (target, job_id, _), answer in zip(sent, answers):
                if target != "finish" and answer is None:  # the replica holding its client is gone
                    self._orphaned(job_id)
            if None in batch:
                return

    def _settle(self, job_id: str) -> None:
        with self._lock:
            self._settled[job_id] = None
            if len(self._settled) > 10_000:
                self._settled.popitem(last=False)

    def _open_inbox(self) -> None:
        """Make this process's reply stream (a first, empty message) and give it a lifetime."""
        self._redis.xadd(self._inbox, {"id": "", "e": ""})
        self._redis.expire(self._inbox, _INBOX_TTL_S)

    def _orphaned(self, job_id: str) -> None:
        with self._lock:
            job = self._held.get(job_id)
        if job is not None and not job.cancelled:
            log.warning("job %s: the API replica waiting for it is gone; dropping it", job_id)
            job.cancel()

    def _read_inbox(self) -> None:
        last = "0"  # the stream is this process's own, made after it started
        renewed = -math.inf  # make it at once (and again whenever Redis lost it)
        while not self._stopping.is_set():
            try:
                if self._monotonic() - renewed > _INBOX_RENEW_S:
                    if not self._redis.expire(self._inbox, _INBOX_TTL_S):
                        self._open_inbox()  # Redis lost it (a restart): events sent meanwhile are lost too
                    renewed = self._monotonic()
                answer = self._redis.xread({self._inbox: last}, block=500, count=1000)
            except redis.RedisError as e:
                if not self._stopping.is_set():
                    log.warning("could not read job events from Redis (%s); retrying", e)
                    time.sleep(0.5)
                renewed = -math.inf  # Redis may have restarted empty: make the stream again at once
                continue
            for _stream, messages in answer or ():
                for message_id, fields in messages:
                    last = message_id
                    if not fields["id"]:
                        continue  # the stream's first message
                    waiting = self._submitted.get(fields["id"])
                    if waiting is None:
                        continue  # its request is over
                    try:
                        event = codec.loads(fields["e"])
                        if waiting.last(event):
                            self._submitted.pop(fields["id"], None)
                            self._settle(fields["id"])
                        waiting.job.emit(event)
                    except Exception:
                        log.exception("job %s: could not hand over an event", fields["id"])

    def _call(self, op: str, *args: Any, now: float | None = None) -> Any:
        now = self._clock() if now is None else now
        with _reachable():
            return self._script(keys=[self._prefix], args=[op, self._policy_json, repr(now), *args])


@contextmanager
def _reachable() -> Iterator[None]:
    """Redis being down or cut off is `QueueUnavailable` (a 503 to clients), whatever the call."""
    try:
        yield
    except UNREACHABLE as e:
        raise QueueUnavailable(f"the queue's Redis cannot be reached ({type(e).__name__}); retry shortly") from e


def _ignore(event: JobEvent) -> None:
    pass


@dataclass(eq=False)
class _Waiting:
    """A realtime job submitted here, and how many of its choices have finished."""

    job: Job
    finished: int = 0

    def last(self, event: JobEvent) -> bool:
        """Whether `event` is the job's last: a failure, a whole result, or its last choice's end."""
        if isinstance(event, ChoiceFinished):
            self.finished += 1
            return self.finished >= self.job.rows
        return not isinstance(event, (JobStarted, TokenEvent, PromptCounted))


def _carried(job: Job) -> Any:
    """What is stored for a job: its payload, with its trace context when it has one."""
    return job.payload if job.trace is None else Traced(job.payload, job.trace)
