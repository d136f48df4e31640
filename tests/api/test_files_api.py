"""OpenAI's Files API through the official client: upload, list (newest first, by purpose),
retrieve, content, delete; clear 400s and a 413 over the upload limit."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.api.conftest import running_server

LINES = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "tiny"}}\n'


def test_upload_list_retrieve_content_delete(client):
    made = client.files.create(file=("requests.jsonl", LINES), purpose="batch")
    assert made.id.startswith("file-") and made.bytes == len(LINES) and made.filename == "requests.jsonl"
    assert made.purpose == "batch" and made.status == "processed"
    other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    listed = [f.id for f in client.files.list()]
    assert listed.index(other.id) < listed.index(made.id)  # newest first
    assert [f.id for f in client.files.list(purpose="batch")] == [made.id]
    assert client.files.retrieve(made.id).filename == "requests.jsonl"
    assert client.files.content(made.id).read() == LINES
    assert client.files.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(made.id)


@pytest.mark.parametrize(("files", "data", "param"), [
    ({"file": ("x.jsonl", LINES)}, {"purpose": "nonsense"}, "purpose"),
    ({"file": ("x.txt", LINES)}, {"purpose": "batch"}, "file"),
    ({"file": ("x.jsonl", b"")}, {"purpose": "batch"}, "file"),
])
def test_bad_uploads_are_400_naming_the_field(base_url, files, data, param):
    answer = httpx.post(f"{base_url}/v1/files", files=files, data=data)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param


def test_an_upload_over_the_limit_is_413(tmp_path, tiny_model_dir):
    with running_server(tmp_path, tiny_model_dir, api={"max_file_bytes": 1000, "max_body_bytes": 100}) as (base, _):
        small = httpx.post(f"{base}/v1/files", files={"file": ("a.jsonl", LINES)}, data={"purpose": "batch"})
        assert small.status_code == 200, small.text  # over the body limit, under the upload limit
        big = httpx.post(f"{base}/v1/files", files={"file": ("b.jsonl", b"x" * 2000)}, data={"purpose": "batch"})
        assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
