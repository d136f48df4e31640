"""Fine-tuning jobs, their events and checkpoints. A trainer claims a queued job (or one whose
lease ran out: its trainer died) with a conditional update, so two trainers never run one job,
and renews the lease while it runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, and_, func, insert, or_, select, update

from genloom.store.database import Database
from genloom.store.schema import FineTuningCheckpointRow, FineTuningEventRow, FineTuningJobRow

_jobs: Table = FineTuningJobRow.__table__  # type: ignore[assignment]
_events: Table = FineTuningEventRow.__table__  # type: ignore[assignment]
_checkpoints: Table = FineTuningCheckpointRow.__table__  # type: ignore[assignment]

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})


class FineTuningJobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"no fine-tuning job with id '{job_id}'")
        self.job_id = job_id


class FineTuningJobConflict(RuntimeError):
    """The job is not in a state that allows what was asked (409)."""


@dataclass(frozen=True, kw_only=True)
class FineTuningJob:
    id: str
    tenant: str
    model: str
    base_version: str
    training_file: str
    validation_file: str | None
    training_blob: str
    validation_blob: str | None
    suffix: str | None
    hyperparameters: dict[str, Any]
    lora: dict[str, Any]
    seed: int
    status: str
    cancel_requested: bool = False
    created_by_admin: bool = False  # an admin key created it: its result may be canaried to everyone
    fine_tuned_model: str | None = None
    trained_tokens: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    lineage: dict[str, Any] | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    attempts: int = 0
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    estimated_finish: datetime | None = None


@dataclass(frozen=True)
class Event:
    id: int
    job_id: str
    created_at: datetime
    level: str
    type: str
    message: str
    data: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class Checkpoint:
    id: str
    job_id: str
    step: int
    metrics: dict[str, Any]
    created_at: datetime


def _job(row: Any) -> FineTuningJob:
    values = dict(row)
    values["metadata"] = values.pop("metadata", None)
    return FineTuningJob(**values)


class FineTuningStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def create(self, job: FineTuningJob) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(insert(_jobs).values(**job.__dict__))

    async def get(self, job_id: str, *, tenant: str | None) -> FineTuningJob:
        query = select(_jobs).where(_jobs.c.id == job_id)
        if tenant is not None:
            query = query.where(_jobs.c.tenant == tenant)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise FineTuningJobNotFound(job_id)
        return _job(row)

    async def list(self, *, tenant: str | None, limit: int, after: str | None = None) -> list[FineTuningJob]:
        """Newest first; `after` is the last id of the page before."""
        query = select(_jobs)
        if tenant is not None:
            query = query.where(_jobs.c.tenant == tenant)
        if after is not None:
            mark = await self.get(after, tenant=tenant)
            query = query.where(or_(_jobs.c.created_at < mark.created_at,
                                    and_(_jobs.c.created_at == mark.created_at, _jobs.c.id < mark.id)))
        query = query.order_by(_jobs.c.created_at.desc(), _jobs.c.id.desc()).limit(limit)
        async with self._database.engine.connect() as conn:
            return [_job(row) for row in (await conn.execute(query)).mappings()]

    async def waiting_or_running(self) -> list[FineTuningJob]:
        query = select(_jobs).where(_jobs.c.status.in_((QUEUED, RUNNING)))
        async with self._database.engine.connect() as conn:
            return [_job(row) for row in (await conn.execute(query)).mappings()]

    async def active_count(self, tenant: str) -> int:
        """The tenant's jobs waiting or running."""
        query = select(func.count()).select_from(_jobs).where(_jobs.c.tenant == tenant, _jobs.c.status.in_((QUEUED, RUNNING)))
        async with self._database.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def claim(self, *, owner: str, lease_s: float, now: datetime, models: set[str]) -> FineTuningJob | None:
        """The oldest queued job on one of `models` (base versions this trainer holds), or a running
        one whose lease expired, now leased to `owner`; None when there is none."""
        if not models:
            return None
        waiting = or_(_jobs.c.status == QUEUED, and_(_jobs.c.status == RUNNING, _jobs.c.lease_until < now))
        query = (select(_jobs.c.id, _jobs.c.status, _jobs.c.lease_owner).where(waiting, _jobs.c.base_version.in_(sorted(models)))
                 .order_by(_jobs.c.created_at, _jobs.c.id).limit(8))
        async with self._database.engine.connect() as conn:
            candidates = (await conn.execute(query)).all()
        for job_id, status, previous_owner in candidates:
            same = and_(_jobs.c.id == job_id, _jobs.c.status == status,
                        _jobs.c.lease_owner.is_(None) if previous_owner is None else _jobs.c.lease_owner == previous_owner,
                        _jobs.c.lease_until < now if status == RUNNING else True)  # still expired: not renewed meanwhile
            async with self._database.engine.begin() as conn:
                done = await conn.execute(update(_jobs).where(same).values(
                    status=RUNNING, lease_owner=owner, lease_until=now + timedelta(seconds=lease_s),
                    started_at=now if status == QUEUED else _jobs.c.started_at, attempts=_jobs.c.attempts + 1))
            if done.rowcount == 1:
                return await self.get(job_id, tenant=None)
        return None

    async def renew(self, job_id: str, *, owner: str, lease_s: float, now: datetime,
                    estimated_finish: datetime | None = None) -> bool:
        """Extend the lease; False when the job is no longer this owner's (then stop)."""
        values: dict[str, Any] = {"lease_until": now + timedelta(seconds=lease_s)}
        if estimated_finish is not None:
            values["estimated_finish"] = estimated_finish
        async with self._database.engine.begin() as conn:
            done = await conn.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.lease_owner == owner,
                                                          _jobs.c.status == RUNNING).values(**values))
        return done.rowcount == 1

    async def finish(self, job_id: str, *, owner: str, status: str, now: datetime, fine_tuned_model: str | None = None,
                     trained_tokens: int | None = None, result: dict[str, Any] | None = None,
                     error: dict[str, Any] | None = None) -> bool:
        async with self._database.engine.begin() as conn:
            done = await conn.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.lease_owner == owner,
                                                          _jobs.c.status == RUNNING).values(
                status=status, finished_at=now, fine_tuned_model=fine_tuned_model, trained_tokens=trained_tokens,
                result=result, error=error, lease_owner=None, lease_until=None))
        return done.rowcount == 1

    async def release(self, job_id: str, *, owner: str) -> None:
        """Back to the queue (this process is stopping); the checkpoints stay for the next run."""
        async with self._database.engine.begin() as conn:
            await conn.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.lease_owner == owner,
                                                   _jobs.c.status == RUNNING).values(status=QUEUED, lease_owner=None,
                                                                                     lease_until=None))

    async def cancel(self, job_id: str, *, tenant: str | None, now: datetime) -> FineTuningJob:
        """A queued job is cancelled at once; a running one is asked to stop (its trainer ends it)."""
        job = await self.get(job_id, tenant=tenant)
        if job.status in TERMINAL:
            raise FineTuningJobConflict(f"fine-tuning job '{job_id}' is {job.status}; it cannot be cancelled")
        async with self._database.engine.begin() as conn:
            await conn.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.status == QUEUED).values(
                status=CANCELLED, finished_at=now, cancel_requested=True))
            await conn.execute(update(_jobs).where(_jobs.c.id == job_id, _jobs.c.status == RUNNING).values(
                cancel_requested=True))
        return await self.get(job_id, tenant=tenant)

    async def cancel_requested(self, job_id: str) -> bool:
        async with self._database.engine.connect() as conn:
            return bool((await conn.execute(select(_jobs.c.cancel_requested).where(_jobs.c.id == job_id))).scalar())

    async def set_lineage(self, job_id: str, lineage: dict[str, Any]) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(update(_jobs).where(_jobs.c.id == job_id).values(lineage=lineage))

    async def add_event(self, job_id: str, *, message: str, now: datetime, level: str = "info", type: str = "message",
                        data: dict[str, Any] | None = None) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(insert(_events).values(job_id=job_id, created_at=now, level=level, type=type, message=message,
                                                      data=data))

    async def events(self, job_id: str, *, after: int | None = None, limit: int = 100, newest_first: bool = True) -> list[Event]:
        query = select(_events).where(_events.c.job_id == job_id)
        if after is not None:
            query = query.where(_events.c.id < after if newest_first else _events.c.id > after)
        query = query.order_by(_events.c.id.desc() if newest_first else _events.c.id).limit(limit)
        async with self._database.engine.connect() as conn:
            return [Event(**row) for row in (await conn.execute(query)).mappings()]

    async def add_checkpoint(self, job_id: str, *, step: int, metrics: dict[str, Any], now: datetime) -> None:
        async with self._database.engine.begin() as conn:
            exists = (await conn.execute(select(_checkpoints.c.id).where(_checkpoints.c.job_id == job_id,
                                                                        _checkpoints.c.step == step))).first()
            if exists is None:
                await conn.execute(insert(_checkpoints).values(id=f"ftckpt-{uuid.uuid4().hex[:24]}", job_id=job_id,
                                                               step=step, metrics=metrics, created_at=now))

    async def checkpoints(self, job_id: str, *, limit: int = 100) -> list[Checkpoint]:
        query = (select(_checkpoints).where(_checkpoints.c.job_id == job_id).order_by(_checkpoints.c.step.desc())
                 .limit(limit))
        async with self._database.engine.connect() as conn:
            return [Checkpoint(**row) for row in (await conn.execute(query)).mappings()]
