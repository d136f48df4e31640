"""Stored responses (the Responses API), per tenant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, insert, select

from genloom.store.database import Database
from genloom.store.schema import ResponseRow

_responses: Table = ResponseRow.__table__  # type: ignore[assignment]


class ResponseNotFound(LookupError):
    def __init__(self, response_id: str) -> None:
        super().__init__(f"no response with id '{response_id}'")
        self.response_id = response_id


@dataclass(frozen=True)
class StoredResponse:
    id: str
    tenant: str
    previous_id: str | None
    conversation: list[dict[str, Any]]  # chat messages up to and including this answer
    body: dict[str, Any]
    created_at: datetime


class ResponseStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def add(self, response: StoredResponse) -> None:
        async with self._database.engine.begin() as conn:
            await conn.execute(insert(_responses).values(**response.__dict__))

    async def get(self, response_id: str, *, tenant: str) -> StoredResponse:
        """Only the tenant's own: another tenant's id is not found, like one that never was."""
        query = select(_responses).where(_responses.c.id == response_id, _responses.c.tenant == tenant)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise ResponseNotFound(response_id)
        return StoredResponse(**row)

    async def delete_many(self, response_ids: list[str], *, tenant: str) -> int:
        if not response_ids:
            return 0
        async with self._database.engine.begin() as conn:
            done = await conn.execute(delete(_responses).where(_responses.c.id.in_(response_ids), _responses.c.tenant == tenant))
        return int(done.rowcount or 0)

    async def delete(self, response_id: str, *, tenant: str) -> None:
        async with self._database.engine.begin() as conn:
            done = await conn.execute(delete(_responses).where(_responses.c.id == response_id, _responses.c.tenant == tenant))
        if not done.rowcount:
            raise ResponseNotFound(response_id)
