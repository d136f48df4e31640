"""Who may call: API keys, the tenants they belong to, and the admin scope.

A key is `gl-` plus 43 URL-safe characters (32 random bytes). Only its SHA-256 is stored (a
random key needs no slow hash), with a short prefix to recognise it in listings. Lookups are
cached for a few seconds; revoking through this process forgets the cache at once, and other
processes notice within `cache_ttl_s`."""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import uuid
from contextlib import suppress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from genloom.jobs import Tier
from genloom.store.tenants import ApiKey, KeyExists, Tenant, TenantExists, TenantStore

log = logging.getLogger("genloom.auth")

DEFAULT_TENANT_ID = "default"
_KEY_SHAPE = re.compile(r"^gl-[A-Za-z0-9_\-]{20,200}$")


class Scope(str, Enum):
    """admin may manage tenants, keys and models, and do everything a tenant key may."""

    ADMIN = "admin"
    TENANT = "tenant"


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    tenant_name: str
    tier: Tier
    scope: Scope
    limits: dict[str, Any]  # the tenant's
    key_id: str | None = None  # None when auth is disabled
    key_limits: dict[str, Any] = field(default_factory=dict)
    guardrails: dict[str, Any] = field(default_factory=dict)  # the tenant's policy overrides
    keep_content: bool = True  # the tenant lets the request log and feedback keep prompts and answers

    @property
    def is_admin(self) -> bool:
        return self.scope is Scope.ADMIN


class Unauthenticated(PermissionError):
    """No key, or one that is unknown, revoked or expired (401)."""


class PermissionDenied(PermissionError):
    """A valid key without the scope this route needs (403)."""


def new_api_key() -> str:
    return "gl-" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    return key[:10]


class Authenticator:
    def __init__(
        self,
        *,
        tenants: TenantStore,
        cache_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._tenants = tenants
        self._ttl = cache_ttl_s
        self._clock = clock
        self._now = wall_clock
        self._cache: dict[str, tuple[float, tuple[ApiKey, Tenant] | None]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        """The principal behind an `Authorization: Bearer <key>` header, or Unauthenticated."""
        if not authorization:
            raise Unauthenticated("missing API key: send it as 'Authorization: Bearer <key>'")
        scheme, _, key = authorization.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise Unauthenticated("the Authorization header must be 'Bearer <key>'")
        if not _KEY_SHAPE.match(key):
            raise Unauthenticated("incorrect API key provided; Genloom keys start with 'gl-'")
        found = await self._lookup(hash_key(key))
        if found is None:
            raise Unauthenticated(f"incorrect API key provided: {key_prefix(key)}…")
        api_key, tenant = found
        now = self._now()
        if api_key.revoked_at is not None:
            raise Unauthenticated(f"the API key {api_key.prefix}… was revoked; ask an admin for a new one")
        if api_key.expires_at is not None and api_key.expires_at <= now:
            raise Unauthenticated(f"the API key {api_key.prefix}… expired; ask an admin for a new one")
        return Principal(
            tenant_id=tenant.id, tenant_name=tenant.name, tier=Tier(tenant.tier), scope=Scope(api_key.scope),
            limits=tenant.limits, key_id=api_key.id, key_limits=api_key.limits, guardrails=tenant.guardrails,
            keep_content=tenant.keep_content,
        )

    def forget(self) -> None:
        """Drop cached lookups (after a revocation or a tenant change made here)."""
        self._cache.clear()

    async def _lookup(self, key_hash: str) -> tuple[ApiKey, Tenant] | None:
        now = self._clock()
        cached = self._cache.get(key_hash)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        found = await self._tenants.key_by_hash(key_hash)
        if len(self._cache) > 10_000:  # unknown keys are cached too; keep it bounded
            self._cache.clear()
        self._cache[key_hash] = (now, found)
        return found


class TenantAdmin:
    """What the admin API does: tenants, their keys, and the bootstrap admin key."""

    def __init__(
        self,
        *,
        tenants: TenantStore,
        authenticator: Authenticator,
        default_tier: Tier,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`on_change` tells other replicas that a key or tenant changed (they forget their
        cached lookups at once instead of within the cache's TTL)."""
        self._tenants = tenants
        self._auth = authenticator
        self._on_change = on_change
        self._default_tier = default_tier
        self._now = wall_clock

    async def create_tenant(
        self, *, name: str, tier: Tier, limits: dict[str, Any], guardrails: dict[str, Any] | None = None,
        keep_content: bool = True,
    ) -> Tenant:
        now = self._now()
        tenant = Tenant(id=f"ten_{uuid.uuid4().hex[:16]}", name=name, tier=tier.value, limits=limits,
                        created_at=now, updated_at=now, guardrails=guardrails or {}, keep_content=keep_content)
        return await self._tenants.create_tenant(tenant)

    async def list_tenants(self) -> list[Tenant]:
        return await self._tenants.list_tenants()

    async def get_tenant(self, tenant_id: str) -> Tenant:
        return await self._tenants.get_tenant(tenant_id)

    async def update_tenant(self, tenant_id: str, **changes: Any) -> Tenant:
        tenant = await self._tenants.update_tenant(tenant_id, at=self._now(), **changes)
        await self._changed()
        return tenant

    async def create_key(
        self,
        tenant_id: str,
        *,
        name: str,
        scope: Scope,
        expires_at: datetime | None = None,
        key: str | None = None,
        limits: dict[str, Any] | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key; the second value is the key itself, which is never shown again."""
        key = key or new_api_key()
        record = ApiKey(
            id=f"key_{uuid.uuid4().hex[:16]}", tenant_id=tenant_id, name=name, prefix=key_prefix(key),
            scope=scope.value, created_at=self._now(), expires_at=expires_at, limits=limits or {},
        )
        return await self._tenants.create_key(record, key_hash=hash_key(key)), key

    async def list_keys(self, tenant_id: str | None = None) -> list[ApiKey]:
        if tenant_id is not None:
            await self._tenants.get_tenant(tenant_id)
        return await self._tenants.list_keys(tenant_id=tenant_id)

    async def revoke_key(self, key_id: str) -> ApiKey:
        key = await self._tenants.revoke_key(key_id, at=self._now())
        await self._changed()
        return key

    async def _changed(self) -> None:
        self._auth.forget()
        if self._on_change is not None:
            try:
                await self._on_change()
            except Exception as e:  # the others still notice within their cache's TTL
                log.warning("could not tell other replicas that a key or tenant changed: %s", e)

    async def bootstrap(self, admin_key: str | None) -> str | None:
        """Make sure the default tenant and an admin key exist. With `admin_key` (GENLOOM_ADMIN_KEY)
        that key is registered if it is not yet; without, a key is made on first start only and
        returned so it can be shown once."""
        # Replicas starting together race here: whoever stores a row second finds it there.
        if await self._tenants.tenant_named(DEFAULT_TENANT_ID) is None:
            now = self._now()
            with suppress(TenantExists):
                await self._tenants.create_tenant(Tenant(
                    id=DEFAULT_TENANT_ID, name=DEFAULT_TENANT_ID, tier=self._default_tier.value, limits={},
                    created_at=now, updated_at=now,
                ))
        if admin_key is not None:
            if not _KEY_SHAPE.match(admin_key):
                raise ValueError("GENLOOM_ADMIN_KEY must look like a Genloom key: 'gl-' and at least 20 URL-safe characters")
            if not await self._tenants.has_key_with_hash(hash_key(admin_key)):
                with suppress(KeyExists):
                    await self.create_key(DEFAULT_TENANT_ID, name="bootstrap admin (GENLOOM_ADMIN_KEY)",
                                          scope=Scope.ADMIN, key=admin_key)
            return None
        if await self._tenants.count_admin_keys():
            return None
        _, key = await self.create_key(DEFAULT_TENANT_ID, name="bootstrap admin", scope=Scope.ADMIN)
        return key
