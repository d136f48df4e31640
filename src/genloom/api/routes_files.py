"""/v1/files: OpenAI's Files API (upload, list, get, content, delete), on the same store as
generated images.

The content route takes either an API key of the file's tenant or the signed, expiring query
(expires, signature) that an image response's `url` carries, so a browser can show it. A file's
id is its content's hash: the same bytes uploaded twice by a tenant are one file."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, UploadFile
from fastapi.responses import Response

from genloom.api.callers import caller
from genloom.gateway.errors import InvalidRequest
from genloom.gateway.image_service import UrlSigner
from genloom.store.files import FileNotFound, FileRecord, FileStore


UPLOAD_PURPOSES = ("batch", "fine-tune", "user_data", "assistants", "vision", "evals")


def _record_body(record: FileRecord) -> dict[str, Any]:
    filename = record.metadata.get("filename") if isinstance(record.metadata, dict) else None
    return {
        "id": record.id, "object": "file", "bytes": record.bytes, "created_at": int(record.created_at.timestamp()),
        "filename": filename or (f"{record.id}.png" if record.content_type == "image/png" else record.id),
        "status": "processed", "expires_at": None, "status_details": None,
        "purpose": record.purpose, "content_type": record.content_type, "sha256": record.sha256,
        "job_id": record.job_id, "metadata": record.metadata,
    }


def build_files_router(files: FileStore, signer: UrlSigner, authenticate: Any) -> APIRouter:
    """`authenticate` is the API-key dependency; the content route calls it only without a signature."""
    router = APIRouter(prefix="/v1/files")

    async def _owned(file_id: str, request: Request) -> FileRecord:
        # As with jobs: a tenant sees only its own files; another tenant's answer 404.
        return await files.get(file_id, tenant=caller(request).tenant)

    @router.post("", dependencies=[Depends(authenticate)])
    async def upload(request: Request, file: UploadFile, purpose: Annotated[str, Form()]) -> dict[str, Any]:
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequest(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", "purpose")
        data = await file.read()
        if not data:
            raise InvalidRequest("the file is empty", "file")
        name = (file.filename or "upload")[:255]
        if purpose in ("batch", "fine-tune") and not name.endswith(".jsonl"):
            raise InvalidRequest(f"a {purpose} file is JSON Lines: name it .jsonl", "file")
        record = await files.add(
            data, tenant=caller(request).tenant, content_type=file.content_type or "application/octet-stream",
            purpose=purpose, job_id=None, metadata={"filename": name}, at=datetime.now(UTC),
        )
        return _record_body(record)

    @router.get("", dependencies=[Depends(authenticate)])
    async def list_files(
        request: Request, purpose: str | None = None, limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        after: str | None = None,
    ) -> dict[str, Any]:
        records = await files.list(tenant=caller(request).tenant, purpose=purpose, limit=limit + 1, after=after)
        data = [_record_body(r) for r in records[:limit]]
        return {"object": "list", "data": data, "has_more": len(records) > limit,
                "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}

    @router.delete("/{file_id}", dependencies=[Depends(authenticate)])
    async def delete_file(file_id: str, request: Request) -> dict[str, Any]:
        await files.delete(file_id, tenant=caller(request).tenant)
        return {"id": file_id, "object": "file", "deleted": True}

    @router.get("/{file_id}", dependencies=[Depends(authenticate)])
    async def get_file(file_id: str, request: Request) -> dict[str, Any]:
        return _record_body(await _owned(file_id, request))

    @router.get("/{file_id}/content")
    async def get_content(
        file_id: str,
        request: Request,
        expires: Annotated[int | None, Query()] = None,
        signature: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        if expires is not None and signature is not None:
            if not signer.valid(file_id, expires, signature):
                raise FileNotFound(file_id)  # expired or forged: as if it did not exist
            record = await files.get(file_id, tenant=None)
        else:
            await authenticate(request)
            record = await _owned(file_id, request)
        headers = {"Cache-Control": "private, max-age=3600", "ETag": f'"{record.sha256}"'}
        return Response(await files.content(record), media_type=record.content_type, headers=headers)

    return router
