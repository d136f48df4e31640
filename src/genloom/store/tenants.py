"""Tenants and API keys in SQL. Keys are stored as hashes only; the gateway makes and checks them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError

from genloom.store.database import Database
from genloom.store.schema import ApiKeyRow, TenantRow

_tenants = TenantRow.__table__
_keys = ApiKeyRow.__table__


@dataclass(frozen=True, kw_only=True)
class Tenant:
    id: str
    name: str
    tier: str
    limits: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    guardrails: dict[str, Any] = field(default_factory=dict)  # policy overrides over the config's
    keep_content: bool = True  # False: no prompts or answers in the request log, feedback keeps what it is sent


@dataclass(frozen=True, kw_only=True)
class ApiKey:
    """A key as it can be shown after creation: its prefix, never the key."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    scope: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    limits: dict[str, Any] = field(default_factory=dict)  # this key's own limits, beside its tenant's


class KeyExists(ValueError):
    """The same key is stored already (two replicas registering the bootstrap key together)."""


class TenantExists(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"a tenant named '{name}' already exists")


class TenantNotFound(LookupError):
    def __init__(self, tenant_id: str) -> None:
        super().__init__(f"no tenant with id '{tenant_id}'")


class ApiKeyNotFound(LookupError):
    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id '{key_id}'")


class TenantStore:
    def __init__(self, *, database: Database) -> None:
        self._database = database

    async def create_tenant(self, tenant: Tenant) -> Tenant:
        try:
            async with self._database.engine.begin() as conn:
                await conn.execute(insert(_tenants), [tenant.__dict__])
        except IntegrityError as e:
            raise TenantExists(tenant.name) from e
        return tenant

    async def get_tenant(self, tenant_id: str) -> Tenant:
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(select(_tenants).where(_tenants.c.id == tenant_id))).mappings().first()
        if row is None:
            raise TenantNotFound(tenant_id)
        return Tenant(**row)

    async def tenant_named(self, name: str) -> Tenant | None:
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(select(_tenants).where(_tenants.c.name == name))).mappings().first()
        return None if row is None else Tenant(**row)

    async def list_tenants(self) -> list[Tenant]:
        async with self._database.engine.connect() as conn:
            rows = (await conn.execute(select(_tenants).order_by(_tenants.c.created_at, _tenants.c.id))).mappings()
            return [Tenant(**row) for row in rows]

    async def update_tenant(self, tenant_id: str, *, at: datetime, **changes: Any) -> Tenant:
        async with self._database.engine.begin() as conn:
            done = await conn.execute(update(_tenants).where(_tenants.c.id == tenant_id).values(updated_at=at, **changes))
        if done.rowcount != 1:
            raise TenantNotFound(tenant_id)
        return await self.get_tenant(tenant_id)

    async def create_key(self, key: ApiKey, *, key_hash: str) -> ApiKey:
        """Raises KeyExists when a key with the same hash is stored already."""
        await self.get_tenant(key.tenant_id)
        try:
            async with self._database.engine.begin() as conn:
                await conn.execute(insert(_keys), [key.__dict__ | {"key_hash": key_hash}])
        except IntegrityError as e:
            raise KeyExists() from e
        return key

    async def list_keys(self, *, tenant_id: str | None = None) -> list[ApiKey]:
        query = select(_keys).order_by(_keys.c.created_at, _keys.c.id)
        if tenant_id is not None:
            query = query.where(_keys.c.tenant_id == tenant_id)
        async with self._database.engine.connect() as conn:
            return [_key(row) for row in (await conn.execute(query)).mappings()]

    async def revoke_key(self, key_id: str, *, at: datetime, tenant_id: str | None = None) -> ApiKey:
        query = update(_keys).where(_keys.c.id == key_id).values(revoked_at=func.coalesce(_keys.c.revoked_at, at))
        if tenant_id is not None:
            query = query.where(_keys.c.tenant_id == tenant_id)
        async with self._database.engine.begin() as conn:
            done = await conn.execute(query)
            if done.rowcount != 1:
                raise ApiKeyNotFound(key_id)
            row = (await conn.execute(select(_keys).where(_keys.c.id == key_id))).mappings().one()
        return _key(row)

    async def key_by_hash(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        query = select(_keys, _tenants.c.name.label("tenant_name"), _tenants.c.tier, _tenants.c.limits.label("tenant_limits"),
                       _tenants.c.guardrails.label("tenant_guardrails"), _tenants.c.keep_content.label("tenant_keep_content"),
                       _tenants.c.created_at.label("tenant_created_at"), _tenants.c.updated_at.label("tenant_updated_at"))
        query = query.join(_tenants, _tenants.c.id == _keys.c.tenant_id).where(_keys.c.key_hash == key_hash)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        tenant = Tenant(
            id=row["tenant_id"], name=row["tenant_name"], tier=row["tier"], limits=row["tenant_limits"],
            created_at=row["tenant_created_at"], updated_at=row["tenant_updated_at"], guardrails=row["tenant_guardrails"],
            keep_content=row["tenant_keep_content"],
        )
        return _key(row), tenant

    async def has_key_with_hash(self, key_hash: str) -> bool:
        async with self._database.engine.connect() as conn:
            return (await conn.execute(select(_keys.c.id).where(_keys.c.key_hash == key_hash))).first() is not None

    async def count_admin_keys(self) -> int:
        query = select(func.count()).select_from(_keys).where(_keys.c.scope == "admin", _keys.c.revoked_at.is_(None))
        async with self._database.engine.connect() as conn:
            return (await conn.execute(query)).scalar_one()


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"], tenant_id=row["tenant_id"], name=row["name"], prefix=row["prefix"], scope=row["scope"],
        created_at=row["created_at"], expires_at=row["expires_at"], revoked_at=row["revoked_at"],
        limits=row["limits"] or {},
    )
