"""Schemathesis over the whole OpenAPI document, against a real server over HTTP, once with an
admin key and once with a tenant key. Every generated request, valid or not (schemathesis'
coverage phase: boundary and invalid values, missing fields; then random ones), must get no 5xx,
no traceback in its body, every error in OpenAI's shape, and a body that conforms to the response
schema wherever the document declares one.

The default run is small and reproducible (a fixed seed, derandomised Hypothesis, a few random
examples per operation); the slow one runs many more:

    python -m pytest -q -m slow tests/security/test_openapi_fuzz.py
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import hypothesis.strategies as st
import httpx
import pytest
import schemathesis
from fastapi.routing import iter_route_contexts
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from tests.security.conftest import ADMIN_KEY, new_tenant, secured_server

TRACE_MARKERS = ("Traceback", 'File "', '.py", line')
SEED = 20261207
# Operations left out of the fuzzing, and why. None today: no route drains or stops the server,
# and the ones that could end the run are safe with generated input (DELETE /v1/admin/keys/{key_id}
# needs a key id, `key_` and 16 random hex digits, never guessed; retiring a version or changing a
# tenant needs the served model's or a tenant's exact name, never generated: only bodies are
# given the model's name, below). A route that drains, shuts down or deletes by guessable names goes here.
EXCLUDED: tuple[tuple[str, str], ...] = ()
# POST routes that take no body: everything they need is in the path.
NO_BODY = {
    ("POST", "/v1/batches/{batch_id}/cancel"), ("POST", "/v1/jobs/{job_id}/retry"),
    ("POST", "/v1/admin/scenarios/{name}/rollback"), ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"),
}
# Served but not described, on purpose: Prometheus' text format and the docs pages themselves.
# Not API operations: scrapes, the schema and its viewers, and the console's static page and assets.
UNDOCUMENTED = {"/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/console", "/console/",
                "/console/assets/{name}",
                "/v1/admin/queue/events"}  # a stream that lasts until the client leaves (tested in test_queue_events)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory, tiny_model_dir) -> Iterator[tuple[str, object]]:
    with secured_server(tmp_path_factory.mktemp("fuzz"), tiny_model_dir) as served:
        yield served


@pytest.fixture(scope="module")
def tenant_key(fuzzed) -> str:
    return new_tenant(fuzzed[0], "fuzzed-tenant").key


@pytest.fixture(scope="module")
def fuzz_schema(fuzzed):
    schema = schemathesis.openapi.from_url(f"{fuzzed[0]}/openapi.json", config=schemathesis.Config.from_dict({"seed": SEED}))
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)

    @schema.hook
    def flatmap_body(context, body):
        # Random model names only reach the 404; the served model's name lets cases go deeper.
        if isinstance(body, dict) and "model" in body:
            return st.sampled_from([body, {**body, "model": "tiny"}])
        return st.just(body)

    return schema


def no_traceback(ctx, response, case) -> None:
    text = response.content.decode("utf-8", "replace")
    for marker in TRACE_MARKERS:
        assert marker not in text, f"the body shows a traceback ({marker!r}): {text[:500]}"


def errors_in_openai_shape(ctx, response, case) -> None:
    if response.status_code < 400:
        return
    body = json.loads(response.content)
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict) and {"message", "type", "param", "code"} <= error.keys(), (
        f"HTTP {response.status_code} is not in OpenAI's error shape: {response.content[:300]!r}"
    )


CHECKS = [not_a_server_error, response_schema_conformance, no_traceback, errors_in_openai_shape]
schema = schemathesis.pytest.from_fixture("fuzz_schema")


def _call(case, key: str) -> None:
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=CHECKS, timeout=60)


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])


@schema.parametrize()
@_settings(4)
def test_no_operation_fails_for_an_admin_key(case):
    _call(case, ADMIN_KEY)


@schema.parametrize()
@_settings(4)
def test_no_operation_fails_for_a_tenant_key(case, tenant_key):
    _call(case, tenant_key)


@pytest.mark.slow
@schema.parametrize()
@_settings(100)
def test_many_more_cases_fail_no_operation_for_an_admin_key(case):
    _call(case, ADMIN_KEY)


@pytest.mark.slow
@schema.parametrize()
@_settings(100)
def test_many_more_cases_fail_no_operation_for_a_tenant_key(case, tenant_key):
    _call(case, tenant_key)


def test_the_document_describes_every_route_and_its_request_body(fuzzed):
    base, server = fuzzed
    document = httpx.get(f"{base}/openapi.json").json()
    described = {(m.upper(), path) for path, ops in document["paths"].items() for m in ops}
    for route in iter_route_contexts(server.app.routes):
        if route.path in UNDOCUMENTED:
            continue
        path = route.path.replace(":path}", "}")  # /v1/models/{model_id:path} is /v1/models/{model_id} there
        for method in route.methods - {"HEAD"}:
            assert (method, path) in described, f"{method} {path} is served but not in /openapi.json"
            operation = document["paths"][path][method.lower()]
            if method in {"POST", "PUT", "PATCH"} and (method, route.path) not in NO_BODY:
                assert "requestBody" in operation, f"{method} {path} takes a body the document does not describe"
            assert any(code.startswith("2") for code in operation["responses"]), f"{method} {path}: no 2xx response"
