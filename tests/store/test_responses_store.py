"""Stored responses against a real SQLite file, migrated by the bundled revisions: per tenant."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from genloom.store import Database
from genloom.store.responses import ResponseNotFound, ResponseStore, StoredResponse


async def test_a_response_is_its_tenants_only(tmp_path):
    database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    await database.migrate()
    try:
        store = ResponseStore(database=database)
        kept = StoredResponse(id="resp_1", tenant="acme", previous_id=None, conversation=[{"role": "user", "content": "hi"}],
                              body={"id": "resp_1", "object": "response"}, created_at=datetime(2026, 12, 7, tzinfo=UTC))
        await store.add(kept)
        assert await store.get("resp_1", tenant="acme") == kept
        with pytest.raises(ResponseNotFound):
            await store.get("resp_1", tenant="other")
        with pytest.raises(ResponseNotFound):
            await store.delete("resp_1", tenant="other")
        await store.delete("resp_1", tenant="acme")
        with pytest.raises(ResponseNotFound):
            await store.get("resp_1", tenant="acme")
    finally:
        await database.dispose()
