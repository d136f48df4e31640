"""/v1/images/generations over real HTTP with the official openai client, both response formats,
signed links, image jobs through /v1/jobs, stored provenance, and refusals in OpenAI's shape."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from genloom.runtimes.image import read_provenance
from genloom.worker.image_worker import ImageWorker
from tests.api.conftest import running_server

image_worker: ImageWorker  # the server's, set by the fixture


@pytest.fixture(scope="module")
def images_server(tmp_path_factory, tiny_model_dir, tiny_image_model_dir) -> Iterator[str]:
    models = [{"name": "tiny", "path": str(tiny_model_dir)}, {"name": "tiny-sd", "path": str(tiny_image_model_dir), "kind": "image", "default_steps": 3}]
    images = {"max_batch_images": 4, "max_images_per_request": 4, "batch_wait_s": 0.05}
    with running_server(tmp_path_factory.mktemp("images"), tiny_model_dir, models=models, images=images) as (base, server):
        global image_worker
        image_worker = next(w for w in server.workers if isinstance(w, ImageWorker))
        yield base


@pytest.fixture()
def client(images_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{images_server}/v1", api_key="unused", max_retries=0)


@pytest.fixture()
def http(images_server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=images_server, timeout=60) as c:
        yield c


def decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_b64_json_answer_is_a_png_with_its_provenance(client):
    result = client.images.generate(model="tiny-sd", prompt="a red circle on a white background", extra_body={"seed": 7})
    assert len(result.data) == 1
    png = base64.b64decode(result.data[0].b64_json)
    assert decode(png).size == (32, 32)
    meta = read_provenance(png)
    assert meta["model"] == "tiny-sd@v1" and meta["seed"] == 7 and meta["steps"] == 3
    assert meta["prompt"] == "a red circle on a white background" and meta["generated_by"] == "genloom"
    # The same seed makes the same picture.
    again = client.images.generate(model="tiny-sd", prompt="a red circle on a white background", extra_body={"seed": 7})
    assert decode(base64.b64decode(again.data[0].b64_json)).tobytes() == decode(png).tobytes()


def test_concurrent_requests_share_a_batch_and_each_gets_its_own_picture(client):
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    requests = [("a red circle", 21), ("a blue star", 22), ("a green square", 23), ("a white triangle", 24)]

    def generate(prompt_seed):
        prompt, seed = prompt_seed
        result = client.images.generate(model="tiny-sd", prompt=prompt, extra_body={"seed": seed})
        return np.asarray(decode(base64.b64decode(result.data[0].b64_json)).convert("RGB"), dtype=float)

    before = len(image_worker.batch_sizes)
    with ThreadPoolExecutor(len(requests)) as pool:
        together = list(pool.map(generate, requests))
    assert max(list(image_worker.batch_sizes)[before:]) > 1  # some of them were denoised together
    for picture, request in zip(together, requests):
        alone = generate(request)
        assert np.abs(picture - alone).max() <= 1.0


def test_url_answer_is_a_signed_link_that_works_without_a_key(client, http):
    result = client.images.generate(model="tiny-sd", prompt="a blue star", n=2, response_format="url", size="32x32")
    assert len(result.data) == 2
    for item in result.data:
        link = httpx.URL(item.url)
        assert link.path.startswith("/v1/files/file-") and link.path.endswith("/content")
        fetched = httpx.get(item.url)  # no Authorization header: the signature is the permission
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        assert read_provenance(fetched.content)["prompt"] == "a blue star"
        # The name is the content's hash.
        import hashlib

        assert link.path.split("/")[3] == "file-" + hashlib.sha256(fetched.content).hexdigest()
    tampered = result.data[0].url.replace("signature=", "signature=0")
    assert httpx.get(tampered).status_code == 404
    not_ascii = httpx.URL(result.data[0].url).copy_set_param("signature", "é" * 64)
    assert httpx.get(not_ascii).status_code == 404
    expired = httpx.URL(result.data[0].url).copy_set_param("expires", "1")
    assert httpx.get(expired).status_code == 404


def test_extra_parameters_are_honoured(client):
    base = dict(model="tiny-sd", prompt="a green square")
    plain = client.images.generate(**base, extra_body={"seed": 3, "steps": 2})
    other = client.images.generate(
        **base, size="64x32", extra_body={"seed": 3, "steps": 4, "guidance_scale": 1.5, "scheduler": "euler", "negative_prompt": "red"}
    )
    meta = read_provenance(base64.b64decode(other.data[0].b64_json))
    assert (meta["steps"], meta["guidance_scale"], meta["scheduler"], meta["negative_prompt"]) == (4, 1.5, "euler", "red")
    assert (meta["width"], meta["height"]) == (64, 32)
    assert read_provenance(base64.b64decode(plain.data[0].b64_json))["steps"] == 2


def test_the_stored_file_records_its_provenance(client, http):
    result = client.images.generate(model="tiny-sd", prompt="a yellow triangle", extra_body={"seed": 11})
    file_id = result.data[0].model_extra["file_id"]
    record = http.get(f"/v1/files/{file_id}").json()
    assert record["object"] == "file" and record["content_type"] == "image/png" and record["purpose"] == "image_generation"
    assert record["metadata"]["seed"] == 11 and record["metadata"]["prompt"] == "a yellow triangle"
    content = http.get(f"/v1/files/{file_id}/content")
    assert content.status_code == 200 and read_provenance(content.content) == record["metadata"]
    # Another tenant cannot see it, with or without the content route.
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        refused = http.get(path, headers={"X-Genloom-Tenant": "mallory"})
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "file_not_found"
    assert http.get("/v1/files/file-0000/content").status_code == 404


@pytest.mark.parametrize(
    ("fields", "param", "status"),
    [
        ({"size": "33x32"}, "size", 400),
        ({"size": "huge"}, "size", 400),
        ({"size": "³²x32"}, "size", 400),
        ({"size": "1" * 5000 + "x32"}, "size", 400),
        ({"size": "4096x4096"}, "size", 400),
        ({"n": 5}, "n", 400),
        ({"n": 0}, "n", 400),
        ({"extra_body": {"steps": 101}}, "steps", 400),
        ({"extra_body": {"steps": 0}}, "steps", 400),
        ({"extra_body": {"guidance_scale": 99}}, "guidance_scale", 400),
        ({"extra_body": {"scheduler": "warp"}}, "scheduler", 400),
        ({"extra_body": {"seed": -1}}, "seed", 400),
        ({"response_format": "jpeg"}, "response_format", 400),
        ({"extra_body": {"output_format": "jpeg"}}, "output_format", 400),
        ({"prompt": "   "}, "prompt", 400),
        ({"model": "tiny"}, "model", 404),
        ({"model": "dall-e-3"}, "model", 404),
    ],
)
def test_bad_input_is_refused_in_openais_shape(client, fields, param, status):
    args = {"model": "tiny-sd", "prompt": "a circle"} | fields
    with pytest.raises(openai.APIStatusError) as caught:
        client.images.generate(**args)
    assert caught.value.status_code == status
    error = caught.value.body
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_unknown_fields_are_refused(http):
    answer = http.post("/v1/images/generations", json={"model": "tiny-sd", "prompt": "x", "strength": 0.5})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "strength"


def test_image_models_are_listed_with_their_kind(client):
    cards = {m.id: m for m in client.models.list().data}
    assert cards["tiny-sd"].model_extra["kind"] == "image" and cards["tiny"].model_extra["kind"] == "text"


def test_an_image_job_completes_with_stored_pictures(http):
    body = {"model": "tiny-sd", "prompt": "a purple star", "n": 2, "seed": 5}
    created = http.post("/v1/jobs", json={"url": "/v1/images/generations", "body": body})
    assert created.status_code == 202
    job_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while (job := http.get(f"/v1/jobs/{job_id}").json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert job["status"] == "completed", job
    data = job["result"]["data"]
    assert [item["seed"] for item in data] == [5, 6]
    for item in data:
        # A stored result holds links to the files, not the pictures or links that expire.
        assert "b64_json" not in item and item["url"] == f"/v1/files/{item['file_id']}/content"
        png = http.get(item["url"]).content
        meta = read_provenance(png)
        assert meta["job_id"] == job_id and meta["prompt"] == "a purple star"
        record = http.get(f"/v1/files/{item['file_id']}").json()
        assert record["job_id"] == job_id


def test_an_image_job_with_bad_input_is_refused_at_submission(http):
    body = {"model": "tiny-sd", "prompt": "x", "size": "31x31"}
    answer = http.post("/v1/jobs", json={"url": "/v1/images/generations", "body": body})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "size"
