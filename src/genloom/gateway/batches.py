"""OpenAI's Batch API on the jobs machinery: every line of the input file becomes an async job
(same queue, free tier: the lowest priority; tenant fairness, retries and crash safety come with
it); a malformed line fails into the error file, not the batch. A batch's progress is its jobs'
states; once they are all over, its output and error files are written (JSON Lines in OpenAI's
shape, `custom_id` kept) by whichever process looks first. Everything lives in the database, so
a batch survives a restart of any process."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from genloom.gateway.errors import InvalidRequest
from genloom.gateway.job_service import JobService, JobSubmission
from genloom.gateway.json_depth import DEFAULT_MAX_JSON_DEPTH, JsonTooDeep, json_depth
from genloom.jobs import Tier
from genloom.jobs.records import JobState
from genloom.store.batches import BatchRecord, BatchStore
from genloom.store.files import FileStore
from genloom.store.jobs import SqlJobStore

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
MAX_LINES = 50_000
# Turns one line's body into the gateway's request for it (the API layer's parsers); raises
# InvalidRequest (or a pydantic ValidationError) for a body that is not a valid request.
RequestFor = Callable[[str, dict[str, Any]], Any]


class BatchService:
    def __init__(self, *, store: BatchStore, jobs: JobService, job_store: SqlJobStore, files: FileStore) -> None:
        self._store, self._jobs, self._job_store, self._files = store, jobs, job_store, files

    async def create(
        self, *, tenant: str, input_file_id: str, endpoint: str, completion_window: str, metadata: dict[str, str] | None,
        request_for: RequestFor, describe: Callable[[Exception], tuple[str, str]],
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    ) -> BatchRecord:
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"endpoint must be one of {', '.join(ENDPOINTS)}", "endpoint")
        if completion_window != "24h":
            raise InvalidRequest("completion_window must be '24h'", "completion_window")
        record = await self._files.get(input_file_id, tenant=tenant)
        if record.purpose != "batch":
            raise InvalidRequest(f"file {input_file_id} was uploaded for '{record.purpose}', not 'batch'", "input_file_id")
        text = (await self._files.content(record)).decode("utf-8", errors="replace")
        raw_lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
        if not raw_lines:
            raise InvalidRequest("the input file has no lines", "input_file_id")
        if len(raw_lines) > MAX_LINES:
            raise InvalidRequest(f"a batch holds at most {MAX_LINES} lines", "input_file_id")
        batch_id = f"batch_{uuid.uuid4().hex}"
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        for number, line in raw_lines:
            custom_id = None
            try:
                if json_depth(line) > max_json_depth:  # json.loads recurses once per level
                    raise InvalidRequest(str(JsonTooDeep(max_json_depth, "the line")), "line")
                item = json.loads(line)
                if not isinstance(item, dict):
                    raise InvalidRequest("a line is a JSON object", "line")
                custom_id = item.get("custom_id")
                if not isinstance(custom_id, str) or not custom_id:
                    raise InvalidRequest("each line needs a custom_id (a non-empty string)", "custom_id")
                if custom_id in seen:
                    raise InvalidRequest(f"custom_id {custom_id!r} is used twice in this batch", "custom_id")
                seen.add(custom_id)
                if item.get("method", "POST") != "POST" or item.get("url") != endpoint:
                    raise InvalidRequest(f"each line is a POST to the batch's endpoint {endpoint}", "url")
                body = item.get("body")
                if not isinstance(body, dict) or body.get("stream"):
                    raise InvalidRequest("a line's body is a request object, not streamed", "body")
                work = replace(request_for(endpoint, body), tier=Tier.FREE)  # a batch waits behind everything else
                view, _ = await self._jobs.submit(JobSubmission(
                    url=endpoint, body=body, request=work, metadata={"batch_id": batch_id, "custom_id": custom_id},
                    idempotency_key=f"{batch_id}:{number}",
                ))
                lines.append({"line": number, "custom_id": custom_id, "job_id": view.record.id})
            except Exception as e:
                code, message = describe(e)
                if code == "server_error":  # not the line's fault (the queue is full, say): no half batch
                    for done in lines:
                        if "job_id" in done:
                            await self._jobs.cancel(done["job_id"], tenant=tenant)
                    raise
                lines.append({"line": number, "custom_id": custom_id, "error": {"code": code, "message": message}})
        batch = BatchRecord(
            id=batch_id, tenant=tenant, endpoint=endpoint, input_file_id=input_file_id,
            completion_window=completion_window, status="in_progress", lines=lines, output_file_id=None,
            error_file_id=None, metadata=dict(metadata or {}), created_at=datetime.now(UTC),
        )
        await self._store.add(batch)
        return await self.refresh(batch)

    async def get(self, batch_id: str, *, tenant: str) -> BatchRecord:
        return await self.refresh(await self._store.get(batch_id, tenant=tenant))

    async def list(self, *, tenant: str, limit: int, after: str | None) -> list[BatchRecord]:
        return [await self.refresh(b) for b in await self._store.list(tenant=tenant, limit=limit, after=after)]

    async def cancel(self, batch_id: str, *, tenant: str) -> BatchRecord:
        batch = await self._store.get(batch_id, tenant=tenant)
        if batch.status in ("completed", "cancelled", "failed"):
            return batch
        moved = await self._store.move(batch, expect="in_progress", status="cancelling", cancelling_at=datetime.now(UTC))
        batch = moved or await self._store.get(batch_id, tenant=tenant)
        states = await self._job_store.many([ln["job_id"] for ln in batch.lines if "job_id" in ln], tenant=tenant)
        for job_id, job in states.items():
            if not job.state.terminal:
                try:
                    await self._jobs.cancel(job_id, tenant=tenant)
                except Exception:  # finished meanwhile: nothing to cancel
                    pass
        return await self.refresh(batch)

    async def request_counts(self, batch: BatchRecord) -> dict[str, int]:
        return await _request_counts(batch, self._job_store)

    async def refresh(self, batch: BatchRecord) -> BatchRecord:
        """The batch as its jobs say; when they are all over, its files are written and it ends."""
        if batch.status not in ("in_progress", "cancelling"):
            return batch
        jobs = await self._job_store.many([ln["job_id"] for ln in batch.lines if "job_id" in ln], tenant=batch.tenant)
        if any(not job.state.terminal for job in jobs.values()):
            return batch
        outputs, errors = [], []
        for ln in batch.lines:
            job = jobs.get(ln.get("job_id", ""))
            if job is not None and job.state is JobState.COMPLETED:
                outputs.append({"id": f"batch_req_{job.id}", "custom_id": ln["custom_id"], "error": None,
                                "response": {"status_code": 200, "request_id": job.id, "body": job.result}})
            else:
                error = ln.get("error") or _job_error(job)
                errors.append({"id": f"batch_req_{job.id if job else uuid.uuid4().hex}", "custom_id": ln.get("custom_id"),
                               "response": None, "error": error | {"line": ln["line"]}})
        now = datetime.now(UTC)
        output_id = await self._write(batch, outputs, "output", now)
        error_id = await self._write(batch, errors, "errors", now)
        final = "cancelled" if batch.status == "cancelling" else "completed"
        moved = await self._store.move(batch, expect=batch.status, status=final, output_file_id=output_id,
                                       error_file_id=error_id, finished_at=now)
        return moved or await self._store.get(batch.id, tenant=batch.tenant)  # another process ended it first

    async def _write(self, batch: BatchRecord, rows: list[dict[str, Any]], kind: str, at: datetime) -> str | None:
        if not rows:
            return None
        data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()
        record = await self._files.add(data, tenant=batch.tenant, content_type="application/jsonl", purpose="batch_output",
                                       job_id=None, metadata={"filename": f"{batch.id}_{kind}.jsonl"}, at=at)
        return record.id


def _job_error(job) -> dict[str, Any]:
    if job is None:
        return {"code": "lost", "message": "the line's job is gone"}
    if job.state is JobState.CANCELLED:
        return {"code": "cancelled", "message": "the batch was cancelled before this line ran"}
    error = job.error or {}
    return {"code": error.get("code") or "generation_failed", "message": error.get("message") or "the request failed"}


async def _request_counts(batch: BatchRecord, job_store: SqlJobStore) -> dict[str, int]:
    """total, completed and failed lines (failed: refused at submission, failed or cancelled jobs)."""
    jobs = await job_store.many([ln["job_id"] for ln in batch.lines if "job_id" in ln], tenant=batch.tenant)
    completed = sum(1 for j in jobs.values() if j.state is JobState.COMPLETED)
    failed = sum(1 for ln in batch.lines if "error" in ln) + sum(
        1 for j in jobs.values() if j.state in (JobState.FAILED, JobState.CANCELLED)
    )
    return {"total": len(batch.lines), "completed": completed, "failed": failed}
