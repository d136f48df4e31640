"""Which waiting generation job runs next on one model: a pure policy over job metadata.

Every eligible REALTIME entry goes before any ASYNC one. Within a class, an entry that has
waited its tier's `max_wait_s` goes first (earliest deadline first), so a low tier is not
starved while fresh high-tier work floods in. Otherwise tiers share service by weight and,
within a tier, tenants share it equally, both by start-time fair queueing on cost: each tier
and tenant has a virtual pass, charged cost / weight when it is served and raised to the
current virtual time when it comes back from idle, so idling banks no credit. A tenant's own
entries go first come, first served. Entries in retry backoff wait aside until `not_before`.
The scheduler does no I/O: the caller maps ids to jobs and calls `pop` when rows free up.
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from genloom.jobs import RequestClass, Tier


@dataclass(frozen=True)
class TierPolicy:
    weight: float  # share of a class's service while tiers compete
    max_wait_s: float  # an entry waiting this long is served before entries that have not


def _default_tiers() -> dict[Tier, TierPolicy]:
    return {
        Tier.PREMIUM: TierPolicy(weight=6, max_wait_s=10),
        Tier.STANDARD: TierPolicy(weight=3, max_wait_s=30),
        Tier.FREE: TierPolicy(weight=1, max_wait_s=120),
    }


def _default_max_queued() -> dict[RequestClass, int]:
    return {RequestClass.REALTIME: 256, RequestClass.ASYNC: 10_000}


def _positive(value: float) -> bool:
    return math.isfinite(value) and value > 0


@dataclass(frozen=True)
class SchedulerPolicy:
    tiers: dict[Tier, TierPolicy] = field(default_factory=_default_tiers)
    max_queued: dict[RequestClass, int] = field(default_factory=_default_max_queued)
    tenant_max_share: float = 0.5  # of a class's queue slots, at least one slot
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for tier in Tier:
            if tier not in self.tiers:
                raise ValueError(f"tiers: missing a policy for tier {tier.value!r}")
            if not _positive(self.tiers[tier].weight):
                raise ValueError(f"tiers[{tier.value!r}].weight must be > 0, got {self.tiers[tier].weight}")
            if not _positive(self.tiers[tier].max_wait_s):
                raise ValueError(f"tiers[{tier.value!r}].max_wait_s must be > 0, got {self.tiers[tier].max_wait_s}")
        for request_class in RequestClass:
            if request_class not in self.max_queued:
                raise ValueError(f"max_queued: missing a limit for class {request_class.value!r}")
            if self.max_queued[request_class] <= 0:
                raise ValueError(
                    f"max_queued[{request_class.value!r}] must be > 0, got {self.max_queued[request_class]}"
                )
        if not 0 < self.tenant_max_share <= 1:
            raise ValueError(f"tenant_max_share must be in (0, 1], got {self.tenant_max_share}")
        if self.retry_after_s < 0:
            raise ValueError(f"retry_after_s must be >= 0, got {self.retry_after_s}")

    def tenant_limit(self, request_class: RequestClass) -> int:
        return max(1, math.floor(self.tenant_max_share * self.max_queued[request_class]))


@dataclass(frozen=True)
class Entry:
    id: str
    request_class: RequestClass
    tier: Tier
    tenant: str
    cost: float = 1.0  # e.g. prompt tokens + max_tokens
    rows: int = 1  # batch slots it needs
    arrived_at: float | None = None  # clock time it joined the queue; None: set to now by add/admit
    not_before: float = 0.0  # not eligible before this clock time (retry backoff)

    def __post_init__(self) -> None:
        if not _positive(self.cost):
            raise ValueError(f"cost must be > 0, got {self.cost}")
        if self.rows < 1:
            raise ValueError(f"rows must be >= 1, got {self.rows}")


class QueueFull(RuntimeError):
    """A class's queue holds `max_queued` entries; the caller answers 503 with Retry-After."""

    def __init__(self, request_class: RequestClass, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the {request_class.value} queue is full ({limit} requests waiting); retry in {retry_after_s} s"
        )
        self.request_class = request_class
        self.limit = limit
        self.retry_after_s = retry_after_s


class TenantQueueFull(RuntimeError):
    """A tenant holds its whole share of a class's queue; the caller answers 429 with Retry-After."""

    def __init__(self, tenant: str, request_class: RequestClass, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"tenant {tenant!r} already has {limit} {request_class.value} requests waiting, the most one tenant "
            f"may queue; retry in {retry_after_s} s or once some of them have started"
        )
        self.tenant = tenant
        self.request_class = request_class
        self.limit = limit
        self.retry_after_s = retry_after_s


# Heaps below hold (arrived_at, seq) keys and are cleaned lazily: a seq no longer in
# Scheduler._eligible was served or removed and is dropped when it reaches the top.


@dataclass
class _TenantQueue:
    pass_: float = 0.0
    count: int = 0  # eligible entries
    waiting: list[tuple[float, int]] = field(default_factory=list)
    stamp: int | None = None  # of its one valid record in _TierQueue.turns; None when it has none

    def copy(self) -> _TenantQueue:
        return replace(self, waiting=list(self.waiting))


@dataclass
class _TierQueue:
    pass_: float = 0.0
    vtime: float = 0.0  # tenants' virtual time: the pass of the tenant last served by fair share
    count: int = 0
    oldest: list[tuple[float, int]] = field(default_factory=list)
    tenants: dict[str, _TenantQueue] = field(default_factory=dict)
    # (tenant pass, head arrived_at, head seq, stamp, tenant): a record is valid while its stamp is the tenant's.
    turns: list[tuple[float, float, int, int, str]] = field(default_factory=list)
    prune_at: int = 64

    def copy(self) -> _TierQueue:
        return replace(
            self,
            oldest=list(self.oldest),
            tenants={name: t.copy() for name, t in self.tenants.items()},
            turns=list(self.turns),
        )


@dataclass
class _ClassQueue:
    vtime: float = 0.0  # tiers' virtual time: the pass of the tier last served by fair share
    count: int = 0
    tiers: dict[Tier, _TierQueue] = field(default_factory=lambda: {tier: _TierQueue() for tier in Tier})

    def copy(self) -> _ClassQueue:
        return replace(self, tiers={tier: t.copy() for tier, t in self.tiers.items()})


_POSITION_LIMIT = 10_000


class Scheduler:
    """The waiting line of one model. Not thread-safe: the queue that owns it serializes calls."""

    def __init__(self, *, policy: SchedulerPolicy, clock: Callable[[], float]) -> None:
        self._policy = policy
        self._clock = clock
        self._tickets = 0  # source of arrival seqs and turn stamps, both only need to be unique and increasing
        self._ids: dict[str, int] = {}
        self._eligible: dict[int, Entry] = {}
        self._deferred: dict[int, Entry] = {}
        self._deferred_heap: list[tuple[float, int]] = []  # (not_before, seq)
        self._classes = {request_class: _ClassQueue() for request_class in RequestClass}
        self._depth = {request_class: 0 for request_class in RequestClass}
        self._tenant_depth: dict[tuple[str, RequestClass], int] = {}

    def resume(
        self,
        *,
        class_vtime: dict[RequestClass, float],
        tier_passes: dict[tuple[RequestClass, Tier], tuple[float, float]],
        tenant_passes: dict[tuple[RequestClass, Tier, str], float],
    ) -> None:
        """Start, empty, from another line's fair-share state: virtual times per class, (pass,
        virtual time) per tier, pass per tenant. For working out positions in a shared line."""
        for request_class, vtime in class_vtime.items():
            self._classes[request_class].vtime = vtime
        for (request_class, tier), (pass_, vtime) in tier_passes.items():
            tq = self._classes[request_class].tiers[tier]
            tq.pass_, tq.vtime = pass_, vtime
        for (request_class, tier, tenant), pass_ in tenant_passes.items():
            self._classes[request_class].tiers[tier].tenants[tenant] = _TenantQueue(pass_=pass_)

    def admit(self, entry: Entry) -> None:
        """Add `entry` if its class and tenant have room; raise QueueFull or TenantQueueFull if not."""
        self._check_new_id(entry.id)
        cls = entry.request_class
        if self._depth[cls] >= self._policy.max_queued[cls]:
            raise QueueFull(cls, self._policy.max_queued[cls], self._policy.retry_after_s)
        limit = self._policy.tenant_limit(cls)
        if self.tenant_depth(entry.tenant, cls) >= limit:
            raise TenantQueueFull(entry.tenant, cls, limit, self._policy.retry_after_s)
        self.add(entry)

    def add(self, entry: Entry) -> None:
        """Add `entry` without admission checks, e.g. to recover already-accepted jobs after a restart."""
        self._check_new_id(entry.id)
        now = self._clock()
        if entry.arrived_at is None:
            entry = replace(entry, arrived_at=now)
        seq = self._ticket()
        self._ids[entry.id] = seq
        self._depth[entry.request_class] += 1
        key = (entry.tenant, entry.request_class)
        self._tenant_depth[key] = self._tenant_depth.get(key, 0) + 1
        if entry.not_before > now:
            self._deferred[seq] = entry
            heapq.heappush(self._deferred_heap, (entry.not_before, seq))
        else:
            self._enqueue(seq, entry)

    def remove(self, entry_id: str) -> Entry | None:
        """Take a waiting entry out (cancellation); None if `entry_id` is not waiting."""
        seq = self._ids.get(entry_id)
        if seq is None:
            return None
        entry = self._deferred.pop(seq, None)
        if entry is None:
            entry = self._dequeue(seq)
        self._forget(entry)
        return entry

    def pop(self, *, max_rows: int) -> Entry | None:
        """The next entry by policy, removed. None if nothing is eligible, or if the next entry needs
        more than `max_rows` rows: later entries never skip ahead, the caller retries with more rows."""
        now = self._clock()
        picked = self._pick(now)
        if picked is None:
            return None
        seq, by_fair_share = picked
        entry = self._eligible[seq]
        if entry.rows > max_rows:
            return None
        self._serve(seq, by_fair_share)
        return entry

    def peek(self) -> Entry | None:
        """What `pop` would return given unlimited rows, left in place."""
        picked = self._pick(self._clock())
        return None if picked is None else self._eligible[picked[0]]

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._ids

    def depth(self, request_class: RequestClass | None = None) -> int:
        """Waiting entries, in backoff or not, of one class or of all."""
        return len(self._ids) if request_class is None else self._depth[request_class]

    def tenant_depth(self, tenant: str, request_class: RequestClass) -> int:
        return self._tenant_depth.get((tenant, request_class), 0)

    def next_eligible_at(self) -> float | None:
        """The earliest `not_before` among entries still in backoff, so a worker knows when to wake."""
        self._promote(self._clock())
        heap = self._deferred_heap
        while heap and heap[0][1] not in self._deferred:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def position(self, entry_id: str) -> int | None:
        """1-based place in line if nothing new arrived; None if unknown or not among the next 10,000."""
        if entry_id not in self._ids:
            return None
        for place, waiting_id in enumerate(self.order(), start=1):
            if waiting_id == entry_id:
                return place
        return None

    def order(self, limit: int = _POSITION_LIMIT) -> list[str]:
        """The ids of the next `limit` entries in the order they would be popped if nothing new
        arrived, by simulating pops on a copy with the clock held at now (jumping to the next
        `not_before` when only entries in backoff are left)."""
        sim_now = self._clock()
        sim = self._copy(clock=lambda: sim_now)
        ids: list[str] = []
        while len(ids) < limit and len(sim):
            entry = sim.pop(max_rows=sys.maxsize)
            if entry is None:
                wake = sim.next_eligible_at()
                assert wake is not None, "a waiting entry is either eligible or in backoff"
                sim_now = wake
                entry = sim.pop(max_rows=sys.maxsize)
                assert entry is not None
            ids.append(entry.id)
        return ids

    def _check_new_id(self, entry_id: str) -> None:
        if entry_id in self._ids:
            raise ValueError(f"an entry with id {entry_id!r} is already waiting")

    def _ticket(self) -> int:
        self._tickets += 1
        return self._tickets

    def _enqueue(self, seq: int, entry: Entry) -> None:
        """Make `entry` eligible; a tier or tenant coming back from idle starts at the current virtual time."""
        assert entry.arrived_at is not None
        self._eligible[seq] = entry
        cq = self._classes[entry.request_class]
        tq = cq.tiers[entry.tier]
        tenant = tq.tenants.get(entry.tenant)
        if tenant is None:
            self._prune_idle_tenants(tq)
            tenant = tq.tenants[entry.tenant] = _TenantQueue()
        key = (entry.arrived_at, seq)
        heapq.heappush(tq.oldest, key)
        heapq.heappush(tenant.waiting, key)
        cq.count += 1
        tq.count += 1
        if tq.count == 1:
            tq.pass_ = max(tq.pass_, cq.vtime)
        tenant.count += 1
        if tenant.count == 1:
            tenant.pass_ = max(tenant.pass_, tq.vtime)
            self._push_turn(tq, entry.tenant, tenant)
        elif self._head(tenant.waiting) == key:
            # An entry in backoff or a recovered one can be older than the tenant's head: its record
            # would otherwise sort too late for the tie-break by arrival.
            self._push_turn(tq, entry.tenant, tenant)

    def _dequeue(self, seq: int) -> Entry:
        """Drop an eligible entry from the counts; its heap keys go lazily."""
        entry = self._eligible.pop(seq)
        cq = self._classes[entry.request_class]
        tq = cq.tiers[entry.tier]
        tenant = tq.tenants[entry.tenant]
        cq.count -= 1
        tq.count -= 1
        tenant.count -= 1
        if tenant.count == 0:
            tenant.waiting.clear()
            tenant.stamp = None
        if tq.count == 0:
            tq.oldest.clear()
            tq.turns.clear()
        return entry

    def _forget(self, entry: Entry) -> None:
        del self._ids[entry.id]
        self._depth[entry.request_class] -= 1
        key = (entry.tenant, entry.request_class)
        self._tenant_depth[key] -= 1
        if self._tenant_depth[key] == 0:
            del self._tenant_depth[key]

    def _promote(self, now: float) -> None:
        heap = self._deferred_heap
        while heap and heap[0][0] <= now:
            _, seq = heapq.heappop(heap)
            entry = self._deferred.pop(seq, None)
            if entry is not None:
                self._enqueue(seq, entry)

    def _pick(self, now: float) -> tuple[int, bool] | None:
        """The seq of the next entry and whether fair share (rather than aging) chose it."""
        self._promote(now)
        for request_class in RequestClass:
            cq = self._classes[request_class]
            if cq.count:
                return self._pick_in_class(cq, now)
        return None

    def _pick_in_class(self, cq: _ClassQueue, now: float) -> tuple[int, bool]:
        heads = {tier: self._head(tq.oldest) for tier, tq in cq.tiers.items() if tq.count}
        aged: tuple[float, float, int] | None = None
        for tier, (arrived_at, seq) in heads.items():
            max_wait_s = self._policy.tiers[tier].max_wait_s
            if now - arrived_at >= max_wait_s:
                key = (arrived_at + max_wait_s, arrived_at, seq)
                aged = key if aged is None or key < aged else aged
        if aged is not None:
            return aged[2], False
        tier = min(heads, key=lambda t: (cq.tiers[t].pass_, -self._policy.tiers[t].weight, heads[t]))
        tq = cq.tiers[tier]
        return self._head(tq.tenants[self._next_tenant(tq)].waiting)[1], True

    def _head(self, heap: list[tuple[float, int]]) -> tuple[float, int]:
        while heap[0][1] not in self._eligible:
            heapq.heappop(heap)
        return heap[0]

    def _next_tenant(self, tq: _TierQueue) -> str:
        """The tenant with the lowest pass, ties to the one whose oldest entry arrived first."""
        while True:
            tenant_pass, arrived_at, seq, stamp, name = tq.turns[0]
            tenant = tq.tenants.get(name)
            if tenant is None or tenant.stamp != stamp:
                heapq.heappop(tq.turns)
            elif self._head(tenant.waiting) != (arrived_at, seq):
                # Its oldest entry was removed since the record was made, so the record sorts too early.
                heapq.heappop(tq.turns)
                self._push_turn(tq, name, tenant)
            else:
                return name

    def _push_turn(self, tq: _TierQueue, name: str, tenant: _TenantQueue) -> None:
        tenant.stamp = self._ticket()
        arrived_at, seq = self._head(tenant.waiting)
        heapq.heappush(tq.turns, (tenant.pass_, arrived_at, seq, tenant.stamp, name))

    def _serve(self, seq: int, by_fair_share: bool) -> None:
        entry = self._dequeue(seq)
        self._forget(entry)
        cq = self._classes[entry.request_class]
        tq = cq.tiers[entry.tier]
        tenant = tq.tenants[entry.tenant]
        # Aged service is charged too, so it counts towards the tier's and tenant's share; only a
        # fair-share pick moves virtual time, since an aged pick need not have the lowest pass.
        if by_fair_share:
            cq.vtime = max(cq.vtime, tq.pass_)
            tq.vtime = max(tq.vtime, tenant.pass_)
        tq.pass_ += entry.cost / self._policy.tiers[entry.tier].weight
        tenant.pass_ += entry.cost
        if tenant.count:
            self._push_turn(tq, entry.tenant, tenant)

    def _prune_idle_tenants(self, tq: _TierQueue) -> None:
        """Forget idle tenants whose pass is behind virtual time: they would come back at virtual time anyway."""
        if len(tq.tenants) < tq.prune_at:
            return
        tq.tenants = {n: t for n, t in tq.tenants.items() if t.count or t.pass_ > tq.vtime}
        tq.prune_at = max(64, 2 * len(tq.tenants))

    def _copy(self, *, clock: Callable[[], float]) -> Scheduler:
        sim = Scheduler(policy=self._policy, clock=clock)
        sim._tickets = self._tickets
        sim._ids = dict(self._ids)
        sim._eligible = dict(self._eligible)
        sim._deferred = dict(self._deferred)
        sim._deferred_heap = list(self._deferred_heap)
        sim._classes = {request_class: cq.copy() for request_class, cq in self._classes.items()}
        sim._depth = dict(self._depth)
        sim._tenant_depth = dict(self._tenant_depth)
        return sim
