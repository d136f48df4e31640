"""/v1/files/{id} and /v1/files/{id}/content: stored files (generated images).

The content route takes either an API key of the file's tenant or the signed, expiring query
(expires, signature) that an image response's `url` carries, so a browser can show it."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from genloom.api.callers import caller
from genloom.gateway.image_service import UrlSigner
from genloom.store.files import FileNotFound, FileRecord, FileStore


def _record_body(record: FileRecord) -> dict[str, Any]:
    return {
        "id": record.id, "object": "file", "bytes": record.bytes, "created_at": int(record.created_at.timestamp()),
        "filename": f"{record.id}.png" if record.content_type == "image/png" else record.id,
        "purpose": record.purpose, "content_type": record.content_type, "sha256": record.sha256,
        "job_id": record.job_id, "metadata": record.metadata,
    }


def build_files_router(files: FileStore, signer: UrlSigner, authenticate: Any) -> APIRouter:
    """`authenticate` is the API-key dependency; the content route calls it only without a signature."""
    router = APIRouter(prefix="/v1/files")

    async def _owned(file_id: str, request: Request) -> FileRecord:
        # As with jobs: a tenant sees only its own files; another tenant's answer 404.
        return await files.get(file_id, tenant=caller(request).tenant)

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
