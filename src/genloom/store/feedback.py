"""Feedback on answers: one row per rating, with a snapshot of what was asked and answered (unless
the tenant keeps no content), so a dataset can be built from it after the request log has dropped
its copy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, delete, func, insert, or_, select

from sqlalchemy.exc import IntegrityError

from genloom.store.database import Database
from genloom.store.schema import FeedbackRow

_feedback: Table = FeedbackRow.__table__  # type: ignore[assignment]


class FeedbackNotFound(LookupError):
    def __init__(self, feedback_id: str) -> None:
        super().__init__(f"no feedback with id '{feedback_id}'")
        self.feedback_id = feedback_id


@dataclass(frozen=True, kw_only=True)
class Feedback:
    id: str
    tenant: str
    response_id: str
    source: str  # request (a chat completion or completion), response, or job
    model: str
    version: str | None
    user: str | None
    rating: int
    scale: str  # thumbs or stars
    score: float  # 0..1
    correction: str | None = None
    tags: list[str] = field(default_factory=list)
    comment: str | None = None
    prompt: list[dict[str, Any]] | str | None = None
    output: str | None = None
    params: dict[str, Any] | None = None
    created_at: datetime


class FeedbackStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def add(self, feedback: Feedback) -> list[str]:
        """Store a rating in place of the tenant's earlier ones of the same answer; their ids."""
        same = (_feedback.c.tenant == feedback.tenant) & (_feedback.c.response_id == feedback.response_id)
        for attempt in range(3):  # two ratings at once: the unique index refuses one, which tries again
            try:
                async with self._database.engine.begin() as conn:
                    replaced = list((await conn.execute(select(_feedback.c.id).where(same))).scalars())
                    if replaced:
                        await conn.execute(delete(_feedback).where(same))
                    await conn.execute(insert(_feedback).values(**feedback.__dict__))
                return replaced
            except IntegrityError:
                if attempt == 2:
                    raise
        return []

    async def get(self, feedback_id: str, *, tenant: str | None) -> Feedback:
        query = select(_feedback).where(_feedback.c.id == feedback_id)
        if tenant is not None:
            query = query.where(_feedback.c.tenant == tenant)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise FeedbackNotFound(feedback_id)
        return Feedback(**row)

    async def rated(self, *, tenant: str, response_ids: list[str]) -> set[str]:
        """Which of these answers the tenant has rated."""
        if not response_ids:
            return set()
        query = select(_feedback.c.response_id).where(_feedback.c.tenant == tenant, _feedback.c.response_id.in_(response_ids))
        async with self._database.engine.connect() as conn:
            return set((await conn.execute(query)).scalars())

    async def list(self, *, tenant: str | None, model: str | None = None, version: str | None = None,
                   since: datetime | None = None, min_score: float | None = None, limit: int = 100,
                   after: str | None = None, oldest_first: bool = False) -> list[Feedback]:
        """A tenant's feedback (every tenant's with None), newest first unless `oldest_first`;
        `after` is the id of the last row of the page before."""
        query = select(_feedback)
        if tenant is not None:
            query = query.where(_feedback.c.tenant == tenant)
        if model is not None:
            query = query.where(_feedback.c.model == model)
        if version is not None:
            query = query.where(_feedback.c.version == version)
        if since is not None:
            query = query.where(_feedback.c.created_at >= since)
        if min_score is not None:
            query = query.where(_feedback.c.score >= min_score)
        order = (_feedback.c.created_at, _feedback.c.id) if oldest_first else (_feedback.c.created_at.desc(), _feedback.c.id.desc())
        async with self._database.engine.connect() as conn:
            if after is not None:
                marked = select(_feedback.c.created_at).where(_feedback.c.id == after)
                if tenant is not None:
                    marked = marked.where(_feedback.c.tenant == tenant)
                mark = (await conn.execute(marked)).scalar()
                if mark is None:
                    raise FeedbackNotFound(after)
                newer = or_(_feedback.c.created_at > mark, and_(_feedback.c.created_at == mark, _feedback.c.id > after))
                older = or_(_feedback.c.created_at < mark, and_(_feedback.c.created_at == mark, _feedback.c.id < after))
                query = query.where(newer if oldest_first else older)
            rows = (await conn.execute(query.order_by(*order).limit(limit))).mappings().all()
        return [Feedback(**row) for row in rows]

    async def version_score(self, version: str, since: datetime) -> tuple[int, float | None]:
        """How many ratings a version's answers got since then, and their mean score."""
        c = _feedback.c
        query = select(func.count(), func.avg(c.score)).where(c.version == version, c.created_at >= since)
        async with self._database.engine.connect() as conn:
            count, mean = (await conn.execute(query)).one()
        return int(count), None if mean is None else round(float(mean), 4)

    async def delete_user(self, *, tenant: str, user: str, response_ids: list[str] = ()) -> int:
        """Remove the tenant's ratings by or of its end user (those naming the user, and those of
        the user's answers `response_ids`); how many there were."""
        c = _feedback.c
        mine = c.user == user
        for start in range(0, len(response_ids), 500):  # IN lists in bounded pieces
            mine = mine | c.response_id.in_(list(response_ids[start:start + 500]))
        async with self._database.engine.begin() as conn:
            done = await conn.execute(delete(_feedback).where(c.tenant == tenant, mine))
        return int(done.rowcount or 0)

