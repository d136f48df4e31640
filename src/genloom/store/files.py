"""Stored files: bytes in a blob store under their content hash, a row per owner in SQL.

Blobs live in a directory (the embedded mode, or a volume every process mounts) or in a bucket
of any S3-compatible service (scaled out across hosts); both are put/get by sha256."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from genloom.store.database import Database
from genloom.store.schema import FileRow

_files: Table = FileRow.__table__  # type: ignore[assignment]


class FileNotFound(LookupError):
    def __init__(self, file_id: str) -> None:
        super().__init__(f"no file with id '{file_id}'")
        self.file_id = file_id


class FileBlobStore:
    """Blobs as files named by their sha256 under `root` (two levels of fan-out)."""

    def __init__(self, root: Path) -> None:
        self._root = root

    def _path(self, sha256: str) -> Path:
        return self._root / sha256[:2] / sha256[2:4] / sha256

    def put(self, data: bytes) -> str:
        """Store `data` (once: the same bytes are one blob) and return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._path(sha256)
        if path.exists():
            return sha256
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: a reader never sees half a file, a crash leaves no blob.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256

    def get(self, sha256: str) -> bytes:
        return self._path(sha256).read_bytes()

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)


class BlobStore(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, sha256: str) -> bytes: ...
    def delete(self, sha256: str) -> None: ...


class S3BlobStore:
    """Blobs in a bucket of any S3-compatible service (AWS S3, MinIO, Ceph, R2, ...), keyed
    `<prefix><sha256>`: every replica and worker reads what any other wrote. Credentials come
    from the usual AWS sources (environment, profile, instance role) unless given."""

    def __init__(
        self, *, bucket: str, prefix: str = "blobs/", endpoint_url: str | None = None, region: str | None = None,
        access_key_id: str | None = None, secret_access_key: str | None = None,
    ) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:  # an optional extra: pip install 'genloom[s3]'
            raise RuntimeError("the S3 blob store needs boto3: pip install 'genloom[s3]'") from e
        self._bucket, self._prefix = bucket, prefix
        self._client = boto3.client(
            "s3", endpoint_url=endpoint_url, region_name=region, aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            config=Config(retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}),
        )

    def put(self, data: bytes) -> str:
        """Store `data` under its sha256 (the same bytes are one object) and return the hash."""
        sha256 = hashlib.sha256(data).hexdigest()
        # One PUT either way: S3 replaces an object whole, so a reader never sees half of it.
        self._client.put_object(Bucket=self._bucket, Key=self._prefix + sha256, Body=data)
        return sha256

    def get(self, sha256: str) -> bytes:
        answer = self._client.get_object(Bucket=self._bucket, Key=self._prefix + sha256)
        return answer["Body"].read()

    def delete(self, sha256: str) -> None:
        self._client.delete_object(Bucket=self._bucket, Key=self._prefix + sha256)


@dataclass(frozen=True, kw_only=True)
class FileRecord:
    id: str
    tenant: str
    sha256: str
    bytes: int
    content_type: str
    purpose: str
    job_id: str | None
    metadata: dict[str, Any]
    created_at: datetime


def file_id(sha256: str) -> str:
    """A file's id is its content hash: the same bytes always have the same name."""
    return f"file-{sha256}"


class FileStore:
    def __init__(self, *, database: Database, blobs: BlobStore) -> None:
        self._database = database
        self._blobs = blobs

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    async def names(self, sha256: str) -> bool:
        """Whether any file row (any tenant's) holds this blob."""
        async with self._database.engine.connect() as conn:
            return (await conn.execute(select(_files.c.id).where(_files.c.sha256 == sha256).limit(1))).first() is not None

    async def add(
        self, data: bytes, *, tenant: str, content_type: str, purpose: str, job_id: str | None,
        metadata: dict[str, Any], at: datetime,
    ) -> FileRecord:
        """Write the blob, then its row; storing the same bytes for the same tenant again is a no-op."""
        sha256 = await asyncio.to_thread(self._blobs.put, data)
        record = FileRecord(
            id=file_id(sha256), tenant=tenant, sha256=sha256, bytes=len(data), content_type=content_type,
            purpose=purpose, job_id=job_id, metadata=metadata, created_at=at,
        )
        try:
            async with self._database.engine.begin() as conn:
                await conn.execute(insert(_files).values(**record.__dict__))
        except IntegrityError:
            return await self.get(record.id, tenant=tenant)
        return record

    async def get(self, file_id: str, *, tenant: str | None) -> FileRecord:
        """The file's record; for a tenant, only its own (None: any owner's, for signed URLs and admins)."""
        query = select(_files).where(_files.c.id == file_id).limit(1)
        if tenant is not None:
            query = query.where(_files.c.tenant == tenant)
        async with self._database.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            raise FileNotFound(file_id)
        return FileRecord(**row)

    async def content(self, record: FileRecord) -> bytes:
        return await asyncio.to_thread(self._blobs.get, record.sha256)

    async def list(self, *, tenant: str, purpose: str | None, limit: int, after: str | None) -> list[FileRecord]:
        """A tenant's files, newest first (ties by id), from after the file `after`."""
        query = select(_files).where(_files.c.tenant == tenant)
        if purpose is not None:
            query = query.where(_files.c.purpose == purpose)
        if after is not None:
            marker = await self.get(after, tenant=tenant)
            query = query.where(
                (_files.c.created_at < marker.created_at) | ((_files.c.created_at == marker.created_at) & (_files.c.id < marker.id))
            )
        query = query.order_by(_files.c.created_at.desc(), _files.c.id.desc()).limit(limit)
        async with self._database.engine.connect() as conn:
            return [FileRecord(**row) for row in (await conn.execute(query)).mappings()]

    async def delete(self, file_id: str, *, tenant: str) -> None:
        """The tenant's row goes; the blob stays while another row (another tenant's, same bytes) names it."""
        async with self._database.engine.begin() as conn:
            done = await conn.execute(delete(_files).where(_files.c.id == file_id, _files.c.tenant == tenant))
        if not done.rowcount:
            raise FileNotFound(file_id)
