"""Replicas starting together on one PostgreSQL database: each registers the default tenant and
the bootstrap admin key; the second to arrive finds them there instead of failing to start."""

from __future__ import annotations

import asyncio

from genloom.gateway.auth import Authenticator, TenantAdmin
from genloom.jobs import Tier
from genloom.store import Database
from genloom.store.tenants import TenantStore

ADMIN_KEY = "gl-bootstrap-race-test-key-0123456789"


async def test_replicas_bootstrapping_together_all_start_and_share_one_admin_key(postgres_url):
    databases = [Database(url=postgres_url) for _ in range(4)]
    try:
        admins = []
        for database in databases:
            tenants = TenantStore(database=database)
            admins.append(TenantAdmin(tenants=tenants, authenticator=Authenticator(tenants=tenants), default_tier=Tier.FREE))
        for _ in range(3):  # the race is narrow: run it a few times on fresh rows
            assert await asyncio.gather(*(admin.bootstrap(ADMIN_KEY) for admin in admins)) == [None] * 4
        tenants = TenantStore(database=databases[0])
        keys = await tenants.list_keys()
        assert [k.name for k in keys] == ["bootstrap admin (GENLOOM_ADMIN_KEY)"]
        principal = await Authenticator(tenants=tenants).authenticate(f"Bearer {ADMIN_KEY}")
        assert principal.tenant_id == "default" and principal.scope.value == "admin"
    finally:
        await asyncio.gather(*(d.dispose() for d in databases))
