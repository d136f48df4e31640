"""Blob stores: a directory, and a bucket on an S3-compatible server (moto's, over real HTTP),
behind the same FileStore: bytes stored once under their hash, read back by any process."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime

import boto3
import pytest
from moto.server import ThreadedMotoServer

from genloom.store import Database
from genloom.store.files import FileBlobStore, FileStore, S3BlobStore
from tests.conftest import free_port

CREDENTIALS = {"access_key_id": "test", "secret_access_key": "test", "region": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def bucket(s3_endpoint: str) -> str:
    name = f"genloom-{hashlib.sha256(str(datetime.now()).encode()).hexdigest()[:12]}"
    boto3.client(
        "s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1"
    ).create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["filesystem", "s3"])
def blobs(request, tmp_path):
    if request.param == "filesystem":
        return FileBlobStore(tmp_path / "blobs")
    return S3BlobStore(bucket=request.getfixturevalue("bucket"), endpoint_url=request.getfixturevalue("s3_endpoint"), **CREDENTIALS)


def test_bytes_are_stored_once_under_their_hash_and_read_back(blobs):
    data = b"\x89PNG\r\n" + bytes(range(256)) * 40
    sha = blobs.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert blobs.put(data) == sha
    assert blobs.get(sha) == data


def test_another_process_reads_what_one_wrote_to_the_bucket(bucket, s3_endpoint):
    writer = S3BlobStore(bucket=bucket, endpoint_url=s3_endpoint, prefix="g/", **CREDENTIALS)
    reader = S3BlobStore(bucket=bucket, endpoint_url=s3_endpoint, prefix="g/", **CREDENTIALS)
    sha = writer.put(b"a picture")
    assert reader.get(sha) == b"a picture"
    listed = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1").list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == [f"g/{sha}"]


async def test_file_store_on_s3_keeps_rows_in_sql_and_bytes_in_the_bucket(tmp_path, bucket, s3_endpoint):
    database = Database(url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}")
    await database.migrate()
    files = FileStore(database=database, blobs=S3BlobStore(bucket=bucket, endpoint_url=s3_endpoint, **CREDENTIALS))
    record = await files.add(b"png bytes", tenant="t1", content_type="image/png", purpose="image", job_id=None,
                             metadata={}, at=datetime.now(UTC))
    assert await files.content(await files.get(record.id, tenant="t1")) == b"png bytes"
    await database.dispose()
