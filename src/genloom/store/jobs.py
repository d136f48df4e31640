"""Where accepted async jobs live: the `JobStore` protocol and its SQL implementation
(SQLite in the embedded mode, PostgreSQL when scaled out; the same SQLAlchemy Core statements).

Every change is a conditional UPDATE on the job's current state and lease owner, so two workers
(or a worker and a canceller) can never both win: a stale worker's result is refused, not stored."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, and_, case, false, func, insert, literal, not_, select, update
from sqlalchemy.exc import IntegrityError

from genloom.jobs.records import (
    TERMINAL_STATES,
    WAITING_STATES,
    IdempotencyConflict,
    JobNotFound,
    JobRecord,
    JobState,
    JobStateConflict,
    JobTransition,
    WebhookAttempt,
    WebhookState,
)
from genloom.store import Database
from genloom.store.group_commit import GroupCommit
from genloom.store.schema import JobEventRow, JobRow, UtcDateTime, WebhookDeliveryRow

Clock = Callable[[], datetime]
_jobs = JobRow.__table__
_events = JobEventRow.__table__
_deliveries = WebhookDeliveryRow.__table__


class JobStore(Protocol):
    """What the job service needs from persistent storage; a Redis/PostgreSQL backend implements the same."""

    async def create(self, record: JobRecord, *, idempotency_window_s: float) -> tuple[JobRecord, bool]: ...
    async def get(self, job_id: str, *, tenant: str | None = None, history: bool = True) -> JobRecord: ...
    async def list(
        self, *, tenant: str | None = None, state: JobState | None = None, limit: int = 20, after: str | None = None,
        model: str | None = None,
    ) -> list[JobRecord]: ...
    async def waiting(self) -> list[JobRecord]: ...
    async def many(self, job_ids: list[str], *, tenant: str) -> dict[str, JobRecord]: ...
    async def count_by_state(self) -> dict[str, int]: ...
    async def start(self, job_id: str, *, owner: str, lease_until: datetime) -> JobRecord | None: ...
    async def heartbeat(self, leases: Mapping[str, str], *, lease_until: datetime) -> set[str]: ...
    async def complete(self, job_id: str, *, owner: str, result: dict[str, Any]) -> bool: ...
    async def fail(
        self, job_id: str, *, owner: str, error: dict[str, Any], retry_at: datetime | None
    ) -> JobRecord | None: ...
    async def release(self, job_id: str, *, owner: str, message: str) -> bool: ...
    async def cancel(self, job_id: str, *, tenant: str | None = None) -> JobRecord: ...
    async def retry(self, job_id: str, *, tenant: str | None = None, extra_attempts: int) -> JobRecord: ...
    async def reclaim_expired(self) -> list[JobRecord]: ...
    async def transitions_since(self, job_id: str, after: int) -> list[tuple[int, JobTransition]]: ...
    async def due_webhooks(self, *, limit: int, hold_s: float = 60.0) -> list[JobRecord]: ...
    async def record_delivery(self, attempt: WebhookAttempt, *, job_id: str, next_at: datetime | None) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class SqlJobStore:
    def __init__(self, *, database: Database, clock: Clock = utc_now) -> None:
        self._database = database
        self._now = clock
        self._writes = GroupCommit(database=database)

    async def create(self, record: JobRecord, *, idempotency_window_s: float) -> tuple[JobRecord, bool]:
        """Store a new job, or return the one already stored under the same Idempotency-Key within
        the window (created is then False). The same key with a different request is a conflict."""
        if record.idempotency_key is not None:
            existing = await self._by_key(record.tenant, record.idempotency_key)
            if existing is not None:
                if existing.created_at >= self._now() - timedelta(seconds=idempotency_window_s):
                    return self._same_request(existing, record), False
                free_key = update(_jobs).where(_jobs.c.id == existing.id).values(idempotency_key=None)
                await self._writes.run(lambda conn: conn.execute(free_key))  # the old key has expired

        def insert_job(conn: Connection) -> None:
            conn.execute(insert(_jobs), _row(record))
            _event(conn, record.id, record.state, record.created_at, 0, None)

        try:
            await self._writes.run(insert_job)
        except IntegrityError:
            if record.idempotency_key is None:
                raise
            existing = await self._by_key(record.tenant, record.idempotency_key)  # a concurrent twin won
            if existing is None:
                raise
            return self._same_request(existing, record), False
        first = JobTransition(state=record.state, at=record.created_at, attempt=0)
        return replace(record, transitions=[first], deliveries=[]), True

    async def get(self, job_id: str, *, tenant: str | None = None, history: bool = True) -> JobRecord:
        query = select(_jobs).where(_jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(_jobs.c.tenant == tenant)  # someone else's job does not exist for you
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
            if row is None:
                raise JobNotFound(job_id)
            transitions, deliveries = [], []
            if history:
                events = await conn.execute(select(_events).where(_events.c.job_id == job_id).order_by(_events.c.id))
                transitions = [_transition(e) for e in events.mappings()]
                sent = await conn.execute(
                    select(_deliveries).where(_deliveries.c.job_id == job_id).order_by(_deliveries.c.id)
                )
                deliveries = [_delivery(d) for d in sent.mappings()]
        return _record(row, transitions, deliveries)

    async def many(self, job_ids: list[str], *, tenant: str) -> dict[str, JobRecord]:
        """The tenant's jobs among `job_ids`, without their histories (a batch's progress)."""
        found: dict[str, JobRecord] = {}
        async with self._database.engine.connect() as conn:
            for start in range(0, len(job_ids), 500):  # bounded IN lists
                chunk = job_ids[start:start + 500]
                rows = await conn.execute(select(_jobs).where(_jobs.c.id.in_(chunk), _jobs.c.tenant == tenant))
                found |= {row["id"]: _record(row) for row in rows.mappings()}
        return found

    async def count_by_state(self) -> dict[str, int]:
        """How many jobs are in each state (every state, zero included), for the metrics."""
        async with self._database.engine.connect() as conn:
            rows = await conn.execute(select(_jobs.c.state, func.count()).group_by(_jobs.c.state))
            counted = {state: n for state, n in rows}
        return {state.value: int(counted.get(state.value, 0)) for state in JobState}

    async def list(
        self, *, tenant: str | None = None, state: JobState | None = None, limit: int = 20, after: str | None = None,
        model: str | None = None,
    ) -> list[JobRecord]:
        """Newest first; `after` is the id of the last job of the previous page; `model` a model's
        name (every version) or one version (`name@v2`)."""
        query = select(_jobs)
        if tenant is not None:
            query = query.where(_jobs.c.tenant == tenant)
        if model is not None:
            query = query.where((_jobs.c.model == model) | _jobs.c.model.startswith(f"{model}@", autoescape=True))
        if state is not None:
            query = query.where(_jobs.c.state == state.value)
        async with self._database.engine.connect() as conn:
            if after is not None:
                anchor = (await conn.execute(select(_jobs.c.created_at).where(_jobs.c.id == after))).scalar()
                if anchor is None:
                    raise JobNotFound(after)
                query = query.where(
                    (_jobs.c.created_at < anchor) | and_(_jobs.c.created_at == anchor, _jobs.c.id < after)
                )
            query = query.order_by(_jobs.c.created_at.desc(), _jobs.c.id.desc()).limit(limit)
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def waiting(self) -> list[JobRecord]:
        query = (
            select(_jobs)
            .where(_jobs.c.state.in_([s.value for s in WAITING_STATES]))
            .order_by(_jobs.c.created_at, _jobs.c.id)
        )
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_record(row) for row in rows]

    async def start(self, job_id: str, *, owner: str, lease_until: datetime) -> JobRecord | None:
        """Take a waiting job under a lease; None when it is no longer waiting (cancelled, say)."""
        now = self._now()
        statement = (
            update(_jobs)
            .where(_jobs.c.id == job_id, _jobs.c.state.in_([s.value for s in WAITING_STATES]))
            .values(
                state=JobState.PROCESSING.value, attempts=_jobs.c.attempts + 1, lease_owner=owner,
                lease_until=lease_until, not_before=None, started_at=func.coalesce(_jobs.c.started_at, now),
                updated_at=now,
            )
            .returning(*_jobs.c)
        )

        def take(conn: Connection) -> Any:
            row = conn.execute(statement).mappings().first()
            if row is not None:
                _event(conn, job_id, JobState.PROCESSING, now, row["attempts"], None)
            return row

        row = await self._writes.run(take)
        return None if row is None else _record(row)

    async def heartbeat(self, leases: Mapping[str, str], *, lease_until: datetime) -> set[str]:
        """Extend the leases held, given as {job id: lease owner}; returns the ids still held."""

        def extend(conn: Connection) -> set[str]:
            held = set()
            for job_id, owner in leases.items():
                done = conn.execute(update(_jobs).where(_held(job_id, owner)).values(lease_until=lease_until))
                if done.rowcount == 1:
                    held.add(job_id)
            return held

        return await self._writes.run(extend) if leases else set()

    async def complete(self, job_id: str, *, owner: str, result: dict[str, Any]) -> bool:
        """Store the result once: only the current lease holder of a processing job may."""
        now = self._now()
        values = dict(state=JobState.COMPLETED.value, result=result, finished_at=now, **_webhook_due_unless(false(), now))

        def finish(conn: Connection) -> Any:
            row = _finish(conn, job_id, owner, now, **values)
            if row is not None:
                _event(conn, job_id, JobState.COMPLETED, now, row["attempts"], None)
            return row

        return await self._writes.run(finish) is not None

    async def fail(
        self, job_id: str, *, owner: str, error: dict[str, Any], retry_at: datetime | None, expired_only: bool = False
    ) -> JobRecord | None:
        """An attempt failed: retry at `retry_at` if given and attempts remain, else fail for good.
        With `expired_only`, only if the lease has still expired (a late heartbeat wins)."""
        now = self._now()
        retrying: Any = _jobs.c.attempts < _jobs.c.max_attempts if retry_at is not None else false()
        values = dict(
            error=error,
            state=case((retrying, JobState.RETRYING.value), else_=JobState.FAILED.value),
            not_before=case((retrying, _at(retry_at)), else_=None),
            finished_at=case((retrying, None), else_=_at(now)),
            **_webhook_due_unless(retrying, now),
        )

        def finish(conn: Connection) -> Any:
            row = _finish(conn, job_id, owner, now, expired_before=now if expired_only else None, **values)
            if row is not None:
                _event(conn, job_id, JobState(row["state"]), now, row["attempts"], error.get("message"))
            return row

        row = await self._writes.run(finish)
        return None if row is None else _record(row)

    async def release(self, job_id: str, *, owner: str, message: str) -> bool:
        """Give a running job back to the queue without counting the attempt (the server stopped)."""
        now = self._now()

        def give_back(conn: Connection) -> Any:
            row = _finish(conn, job_id, owner, now, state=JobState.QUEUED.value, attempts=_jobs.c.attempts - 1)
            if row is not None:
                _event(conn, job_id, JobState.QUEUED, now, row["attempts"], message)
            return row

        return await self._writes.run(give_back) is not None

    async def cancel(self, job_id: str, *, tenant: str | None = None) -> JobRecord:
        record = await self.get(job_id, tenant=tenant, history=False)
        if record.state.terminal:
            raise JobStateConflict(job_id, record.state, "cancelled")
        now = self._now()
        statement = (
            update(_jobs)
            .where(_jobs.c.id == job_id, _jobs.c.state.notin_([s.value for s in TERMINAL_STATES]))
            .values(
                state=JobState.CANCELLED.value, lease_owner=None, lease_until=None, not_before=None,
                finished_at=now, updated_at=now,
            )
            .returning(_jobs.c.attempts)
        )

        def stop(conn: Connection) -> int | None:
            attempts = conn.execute(statement).scalar()
            if attempts is not None:
                _event(conn, job_id, JobState.CANCELLED, now, attempts, "cancelled by request")
            return attempts

        if await self._writes.run(stop) is None:  # it finished in the meantime
            current = await self.get(job_id, history=False)
            raise JobStateConflict(job_id, current.state, "cancelled")
        return await self.get(job_id)

    async def retry(self, job_id: str, *, tenant: str | None = None, extra_attempts: int) -> JobRecord:
        """Put a failed or cancelled job back in the queue by hand, with `extra_attempts` more tries."""
        record = await self.get(job_id, tenant=tenant, history=False)
        if record.state not in (JobState.FAILED, JobState.CANCELLED):
            raise JobStateConflict(job_id, record.state, "retried (only failed or cancelled jobs can be)")
        now = self._now()
        statement = (
            update(_jobs)
            .where(_jobs.c.id == job_id, _jobs.c.state == record.state.value)
            .values(
                state=JobState.QUEUED.value, max_attempts=record.attempts + extra_attempts, error=None,
                finished_at=None, webhook_state=None, webhook_next_at=None, updated_at=now,
            )
        )

        def requeue(conn: Connection) -> bool:
            if conn.execute(statement).rowcount != 1:
                return False
            _event(conn, job_id, JobState.QUEUED, now, record.attempts, "retried by request")
            return True

        if not await self._writes.run(requeue):
            current = await self.get(job_id, history=False)
            raise JobStateConflict(job_id, current.state, "retried")
        return await self.get(job_id)

    async def reclaim_expired(self) -> list[JobRecord]:
        """Jobs whose worker stopped heartbeating go back to the queue (or fail when out of attempts)."""
        now = self._now()
        async with self._database.engine.connect() as conn:
            expired = (
                await conn.execute(
                    select(_jobs.c.id, _jobs.c.lease_owner).where(
                        _jobs.c.state == JobState.PROCESSING.value, _jobs.c.lease_until < now
                    )
                )
            ).all()
        error = {"message": "the worker running this job stopped answering (its lease expired)", "code": "worker_lost"}
        reclaimed = []
        for job_id, owner in expired:
            record = await self.fail(job_id, owner=owner, error=error, retry_at=now, expired_only=True)
            if record is not None:
                reclaimed.append(record)
        return reclaimed

    async def transitions_since(self, job_id: str, after: int) -> list[tuple[int, JobTransition]]:
        query = select(_events).where(_events.c.job_id == job_id, _events.c.id > after).order_by(_events.c.id)
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [(row["id"], _transition(row)) for row in rows]

    async def due_webhooks(self, *, limit: int, hold_s: float = 60.0) -> list[JobRecord]:
        """Claim up to `limit` deliveries that are due: each is held for `hold_s` (its next
        attempt time moves on), so another replica polling at once does not send it too, and a
        claimer that dies lets it come due again. `record_delivery` then sets the real next time."""
        now = self._now()
        due = (
            select(_jobs.c.id)
            .where(_jobs.c.webhook_state == WebhookState.PENDING.value, _jobs.c.webhook_next_at <= now)
            .order_by(_jobs.c.webhook_next_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )

        def claim(conn: Connection) -> list[Any]:
            ids = conn.execute(due).scalars().all()
            if not ids:
                return []
            # The condition again: where rows cannot be locked (SQLite), a racing claimer loses here.
            claimed = (
                update(_jobs)
                .where(_jobs.c.id.in_(ids), _jobs.c.webhook_state == WebhookState.PENDING.value, _jobs.c.webhook_next_at <= now)
                .values(webhook_next_at=now + timedelta(seconds=hold_s))
                .returning(*_jobs.c)
            )
            return list(conn.execute(claimed).mappings().all())

        rows = await self._writes.run(claim)
        return sorted((_record(row) for row in rows), key=lambda r: r.id)

    async def record_delivery(self, attempt: WebhookAttempt, *, job_id: str, next_at: datetime | None) -> None:
        """Record one attempt; `next_at` None means no more attempts will be made."""
        if attempt.delivered:
            state = WebhookState.DELIVERED
        else:
            state = WebhookState.PENDING if next_at is not None else WebhookState.FAILED
        job_update = (
            update(_jobs)
            .where(_jobs.c.id == job_id)
            .values(webhook_state=state.value, webhook_attempts=attempt.attempt, webhook_next_at=next_at)
        )

        def record(conn: Connection) -> None:
            conn.execute(insert(_deliveries), {"job_id": job_id, **attempt.__dict__})
            conn.execute(job_update)

        await self._writes.run(record)

    async def _by_key(self, tenant: str, key: str) -> JobRecord | None:
        query = select(_jobs.c.id).where(_jobs.c.tenant == tenant, _jobs.c.idempotency_key == key)
        async with self._database.engine.connect() as conn:
            job_id = (await conn.execute(query)).scalar()
        return None if job_id is None else await self.get(job_id)

    @staticmethod
    def _same_request(existing: JobRecord, record: JobRecord) -> JobRecord:
        if existing.request_hash != record.request_hash:
            raise IdempotencyConflict(record.idempotency_key or "", existing.id)
        return existing


def _held(job_id: str, owner: str) -> Any:
    return and_(_jobs.c.id == job_id, _jobs.c.lease_owner == owner, _jobs.c.state == JobState.PROCESSING.value)


def _finish(
    conn: Connection, job_id: str, owner: str, now: datetime, expired_before: datetime | None = None, **values: Any
) -> Any | None:
    """Update a processing job held by `owner`; its new row, or None if `owner` does not hold it."""
    values = {"lease_owner": None, "lease_until": None, "updated_at": now, **values}
    held = _held(job_id, owner)
    if expired_before is not None:
        held = and_(held, _jobs.c.lease_until < expired_before)
    return conn.execute(update(_jobs).where(held).values(**values).returning(*_jobs.c)).mappings().first()


def _webhook_due_unless(retrying: Any, now: datetime) -> dict[str, Any]:
    """A job that ends (rather than retries) and has a callback URL gets a webhook due now."""
    due = and_(_jobs.c.callback_url.is_not(None), not_(retrying))
    return {
        "webhook_state": case((due, WebhookState.PENDING.value), else_=_jobs.c.webhook_state),
        "webhook_next_at": case((due, _at(now)), else_=_jobs.c.webhook_next_at),
    }


def _at(value: datetime | None) -> Any:
    """A datetime inside a CASE, bound with the column type so SQLite stores it as it does elsewhere."""
    return literal(value, type_=UtcDateTime())


def _event(conn: Connection, job_id: str, state: JobState, at: datetime, attempt: int, message: str | None) -> None:
    conn.execute(insert(_events), {"job_id": job_id, "state": state.value, "at": at, "attempt": attempt, "message": message})


_RECORD_COLUMNS = {
    "id", "tenant", "tier", "url", "body", "request", "model", "cost", "attempts", "max_attempts", "request_hash",
    "not_before", "lease_owner", "lease_until", "result", "error", "callback_url", "idempotency_key",
    "webhook_attempts", "webhook_next_at", "created_at", "updated_at", "started_at", "finished_at",
}


def _row(record: JobRecord) -> dict[str, Any]:
    values = {name: getattr(record, name) for name in _RECORD_COLUMNS}
    values["state"] = record.state.value
    values["metadata"] = record.metadata
    values["webhook_state"] = record.webhook_state.value if record.webhook_state else None
    return values


def _record(row: Any, transitions: list[JobTransition] | None = None, deliveries: list[WebhookAttempt] | None = None) -> JobRecord:
    values = {name: row[name] for name in _RECORD_COLUMNS}
    return JobRecord(
        **values,
        state=JobState(row["state"]),
        metadata=row["metadata"],
        webhook_state=WebhookState(row["webhook_state"]) if row["webhook_state"] else None,
        transitions=transitions or [],
        deliveries=deliveries or [],
    )


def _transition(row: Any) -> JobTransition:
    return JobTransition(state=JobState(row["state"]), at=row["at"], attempt=row["attempt"], message=row["message"])


def _delivery(row: Any) -> WebhookAttempt:
    return WebhookAttempt(
        webhook_id=row["webhook_id"], attempt=row["attempt"], url=row["url"], status_code=row["status_code"],
        error=row["error"], duration_ms=row["duration_ms"], delivered=row["delivered"], at=row["at"],
    )
