"""Delivers job webhooks: POSTs the finished job, signed, to its callback URL, retrying with
backoff; every attempt is recorded, and pending deliveries survive a restart (they live in the store)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from contextlib import suppress
from datetime import timedelta

import httpx

from genloom.config import JobsSettings
from genloom.gateway.job_body import job_body, unix
from genloom.gateway.job_service import JobView
from genloom.gateway.webhooks import GuardedTransport, Resolver, WebhookTargetRefused, check_target, deliver, resolve_host
from genloom.queue.backoff import retry_delay
from genloom.jobs.records import JobRecord, WebhookAttempt
from genloom.store.jobs import JobStore, utc_now
from genloom.telemetry import NO_OBSERVER, Observer

log = logging.getLogger("genloom.webhooks")
_IDLE_POLL_S = 1.0


class WebhookDispatcher:
    def __init__(
        self,
        *,
        store: JobStore,
        secret: str,
        allow_hosts: frozenset[str],
        settings: JobsSettings,
        resolve: Resolver = resolve_host,
        rng: random.Random | None = None,
        batch: int = 32,
        observer: Observer = NO_OBSERVER,
    ) -> None:
        self._store = store
        self._observer = observer
        self._secret = secret
        self._allow_hosts = allow_hosts
        self._settings = settings
        self._resolve = resolve
        self._rng = rng or random.Random()
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._client: httpx.AsyncClient | None = None

    def wake(self) -> None:
        """A job just finished: look for due deliveries now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        # Checked again at connect time, and connected to the address checked (DNS rebinding); no
        # keep-alive, as pooled connections are keyed by address, not by the name TLS verified.
        transport = GuardedTransport(
            allow_hosts=self._allow_hosts, resolve=self._resolve,
            inner=httpx.AsyncHTTPTransport(limits=httpx.Limits(max_keepalive_connections=0)),
        )
        # trust_env=False: a proxy from the environment must not see signed job payloads.
        self._client = httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, timeout=None)
        self._task = asyncio.create_task(self._deliver_forever(), name="genloom-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    async def deliver_due(self) -> int:
        """One pass over the deliveries that are due; how many were attempted."""
        # Held while this process delivers them: one attempt's timeout, with room to record it.
        due = await self._store.due_webhooks(limit=self._batch, hold_s=self._settings.webhook_timeout_s + 30)
        await asyncio.gather(*(self._deliver(record) for record in due))
        return len(due)

    async def _deliver_forever(self) -> None:
        while True:
            try:
                attempted = await self.deliver_due()
            except Exception:
                log.exception("delivering webhooks failed")
                attempted = 0
            if attempted < self._batch:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), _IDLE_POLL_S)
                self._wake.clear()

    async def _deliver(self, record: JobRecord) -> None:
        assert self._client is not None and record.callback_url is not None
        full = await self._store.get(record.id)
        attempt = record.webhook_attempts + 1
        # One id per finished attempt of the job, the same across delivery retries, so receivers can de-duplicate.
        webhook_id = f"wh_{record.id}_{full.attempts}"
        payload = {
            "object": "event",
            "id": webhook_id,
            "type": f"job.{full.state.value}",
            "created_at": unix(full.finished_at),
            "data": job_body(JobView(full)),
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            # Checked again at each attempt: the name may resolve elsewhere now (DNS rebinding).
            await check_target(record.callback_url, allow_hosts=self._allow_hosts, resolve=self._resolve)
            result = await deliver(
                client=self._client, url=record.callback_url, body=body, secret=self._secret, webhook_id=webhook_id,
                attempt=attempt, timeout_s=self._settings.webhook_timeout_s,
            )
        except WebhookTargetRefused as e:
            result = WebhookAttempt(
                webhook_id=webhook_id, attempt=attempt, url=record.callback_url, status_code=None, error=str(e),
                duration_ms=0.0, delivered=False, at=utc_now(),
            )
        next_at = None
        if not result.delivered and attempt < self._settings.webhook_max_attempts:
            delay = retry_delay(
                attempt, base_s=self._settings.webhook_retry_base_s, max_s=self._settings.webhook_retry_max_s, rng=self._rng
            )
            next_at = utc_now() + timedelta(seconds=delay)
        await self._store.record_delivery(result, job_id=record.id, next_at=next_at)
        self._observer.webhook_delivery(result="delivered" if result.delivered else "failed")
        if not result.delivered:
            log.info("webhook for job %s, attempt %d failed: %s", record.id, attempt, result.error)
