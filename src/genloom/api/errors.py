"""Every error a client can see, in OpenAI's shape {"error": {message, type, param, code}},
with its HTTP status decided here and nowhere else."""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError
from starlette.exceptions import HTTPException as StarletteHTTPException

from genloom.gateway.auth import PermissionDenied, Unauthenticated
from genloom.gateway.pipeline.guard import GuardBlocked
from genloom.guardrails.policy import PolicyError
from genloom.gateway.errors import GenerationFailed, InvalidRequest, ModelNotFound, NotReady, NoWorker, TimedOut
from genloom.gateway.rate_limit import RateLimited
from genloom.queue import QueueClosed, QueueFull, QueueUnavailable, TenantQueueFull
from genloom.jobs.records import IdempotencyConflict, JobNotFound, JobStateConflict
from genloom.registry import RegistryConflict, UnknownModel
from genloom.registry.rollouts import InvalidRollout, RolloutNotFound
from genloom.store.files import FileNotFound
from genloom.store.batches import BatchNotFound
from genloom.store.responses import ResponseNotFound
from genloom.store.feedback import FeedbackNotFound
from genloom.store.datasets import DatasetNotFound
from genloom.store.fine_tuning import FineTuningJobConflict, FineTuningJobNotFound
from genloom.gateway.feedback import AnswerNotFound
from genloom.store.templates import ScenarioNotFound, TemplateNotFound
from genloom.store.tenants import ApiKeyNotFound, TenantExists, TenantNotFound

log = logging.getLogger("genloom.api")


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(
    status: int, message: str, type_: str, param: str | None = None, code: str | None = None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(error_body(message, type_, param, code), status_code=status, headers=headers)


def sse_error(message: str, type_: str = "server_error", code: str | None = None) -> str:
    """An error event for a stream that already started (its status line has been sent)."""
    return f"data: {json.dumps(error_body(message, type_, None, code))}\n\n"


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    errors = exc.errors()
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    if first.get("type") == "json_invalid":
        return "the request body is not valid JSON", None
    loc = [str(p) for p in first.get("loc", ())]
    if loc[:1] == ["body"]:  # FastAPI's marker for "in the request body", not a field
        loc = loc[1:]
    param = ".".join(loc) or None
    return describe_invalid(first, param), param


def describe_invalid(error: Mapping[str, Any], param: str | None) -> str:
    """One pydantic error in OpenAI's words, naming the parameter."""
    if error.get("type") == "missing":
        return f"missing required parameter: '{param}'"
    if error.get("type") == "extra_forbidden":
        return f"unrecognized request argument supplied: '{param}'"
    message = error.get("msg", "invalid value")
    return f"invalid value for '{param}': {message}" if param else message


# Errors whose answer is always the same: exception -> (status, OpenAI type, param, code).
_PLAIN: dict[type[Exception], tuple[int, str, str | None, str]] = {
    ModelNotFound: (404, "invalid_request_error", "model", "model_not_found"),
    PermissionDenied: (403, "permission_error", None, "insufficient_scope"),
    TemplateNotFound: (404, "invalid_request_error", "template", "template_not_found"),
    ScenarioNotFound: (404, "invalid_request_error", "scenario", "scenario_not_found"),
    TenantExists: (409, "invalid_request_error", "name", "tenant_exists"),
    TenantNotFound: (404, "invalid_request_error", "tenant_id", "tenant_not_found"),
    ApiKeyNotFound: (404, "invalid_request_error", "key_id", "api_key_not_found"),
    JobNotFound: (404, "invalid_request_error", "job_id", "job_not_found"),
    JobStateConflict: (409, "invalid_request_error", None, "job_state_conflict"),
    FineTuningJobNotFound: (404, "invalid_request_error", "fine_tuning_job_id", "fine_tuning_job_not_found"),
    FineTuningJobConflict: (409, "invalid_request_error", None, "fine_tuning_job_state_conflict"),
    IdempotencyConflict: (409, "invalid_request_error", "Idempotency-Key", "idempotency_key_reused"),
    GenerationFailed: (500, "server_error", None, "generation_failed"),
    FileNotFound: (404, "invalid_request_error", "file_id", "file_not_found"),
    ResponseNotFound: (404, "invalid_request_error", "response_id", "response_not_found"),
    AnswerNotFound: (404, "invalid_request_error", "response_id", "response_not_found"),
    FeedbackNotFound: (404, "invalid_request_error", "feedback_id", "feedback_not_found"),
    DatasetNotFound: (404, "invalid_request_error", "dataset", "dataset_not_found"),
    BatchNotFound: (404, "invalid_request_error", "batch_id", "batch_not_found"),
    RegistryConflict: (409, "invalid_request_error", None, "registry_conflict"),
    RolloutNotFound: (404, "invalid_request_error", None, "rollout_not_found"),
}


@dataclass(frozen=True)
class ApiError:
    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] | None = None

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.param, self.code, self.headers)

    def sse(self) -> str:
        return sse_error(self.message, self.type, self.code)


def _retry_after(seconds: int) -> dict[str, str]:
    return {"Retry-After": str(seconds)}


def api_error(exc: Exception) -> ApiError | None:
    """The one map from what went wrong to what a client sees, for an HTTP answer and for an
    error event in a stream alike; None for an exception that is a bug (500, logged)."""
    for cls, (status, type_, param, code) in _PLAIN.items():
        if isinstance(exc, cls):
            return ApiError(status, str(exc), type_, param, code)
    for cls, rule in _RULES:
        if isinstance(exc, cls) and (error := rule(exc)) is not None:
            return error
    return None


def _unknown_model(exc: UnknownModel) -> ApiError:
    names = ", ".join(exc.known) or "none"
    return ApiError(404, f"the model '{exc.ref}' does not exist; available: {names}", "invalid_request_error", "model",
                    "model_not_found")


def _timed_out(exc: TimedOut) -> ApiError:
    if exc.started:
        return ApiError(504, str(exc), "server_error", None, "worker_timeout")
    return ApiError(503, str(exc), "server_error", None, "queue_timeout", _retry_after(exc.retry_after_s))


def _outage(exc: Exception) -> ApiError | None:
    """A full disk, or a database, Redis or other service that cannot be reached; None otherwise."""
    if disk_full(exc):
        return ApiError(507, "the server's disk is full; nothing was stored, retry once space is freed", "server_error",
                        None, "insufficient_storage", _retry_after(30))
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return ApiError(503, f"Redis cannot be reached ({type(exc).__name__}); retry shortly", "server_error", None,
                        "queue_unavailable", _retry_after(1))
    if isinstance(exc, DBAPIError) and database_unreachable(exc):
        return ApiError(503, "the database cannot be reached; retry shortly", "server_error", None, "store_unavailable",
                        _retry_after(1))
    if isinstance(exc, ConnectionError):
        return ApiError(503, f"a service this server needs cannot be reached ({type(exc).__name__}); retry shortly",
                        "server_error", None, "service_unavailable", _retry_after(1))
    return None


# Checked in order (a subclass before its base): exception -> its answer (None: not this rule's).
_RULES: list[tuple[type[Exception], Callable[[Any], ApiError | None]]] = [
    (UnknownModel, _unknown_model),
    (InvalidRollout, lambda e: ApiError(400, str(e), "invalid_request_error", e.param, "invalid_value")),
    (InvalidRequest, lambda e: ApiError(400, str(e), "invalid_request_error", e.param, "invalid_value")),
    (GuardBlocked, lambda e: ApiError(400, str(e), "invalid_request_error", e.param, "content_blocked")),
    (PolicyError, lambda e: ApiError(400, str(e), "invalid_request_error", e.param, "invalid_value")),
    (QueueFull, lambda e: ApiError(503, str(e), "server_error", None, "queue_full", _retry_after(e.retry_after_s))),
    (Unauthenticated, lambda e: ApiError(401, str(e), "invalid_request_error", None, "invalid_api_key",
                                         {"WWW-Authenticate": "Bearer"})),
    (RateLimited, lambda e: ApiError(429, str(e), "rate_limit_error", None, f"{e.scope.value}_{e.limit}", dict(e.headers))),
    (TenantQueueFull, lambda e: ApiError(429, str(e), "rate_limit_error", None, "tenant_queue_full",
                                         _retry_after(e.retry_after_s))),
    (QueueClosed, lambda e: ApiError(503, "the server is shutting down; retry on another replica", "server_error", None,
                                     "not_ready", _retry_after(1))),
    (QueueUnavailable, lambda e: ApiError(503, str(e), "server_error", None, "queue_unavailable", _retry_after(1))),
    (NoWorker, lambda e: ApiError(503, str(e), "server_error", "model", "no_worker", _retry_after(e.retry_after_s))),
    (NotReady, lambda e: ApiError(503, str(e), "server_error", None, "not_ready", _retry_after(e.retry_after_s))),
    (TimedOut, _timed_out),
    (redis.ConnectionError, _outage),
    (redis.TimeoutError, _outage),
    (DBAPIError, _outage),
    (OSError, _outage),
]


def disk_full(exc: BaseException) -> bool:
    """ENOSPC from a file write, or SQLite's "database or disk is full", however wrapped."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if "database or disk is full" in str(exc):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__
    return False


def database_unreachable(exc: DBAPIError) -> bool:
    """The database is away (refused or lost the connection), not a bad statement: raised while
    connecting (no statement), a connection found dead, or SQLSTATE class 08 (connection
    exception) or 57P (the server shut the session down)."""
    sqlstate = str(getattr(exc.orig, "sqlstate", "") or getattr(exc.orig, "pgcode", "") or "")
    return (
        exc.statement is None or exc.connection_invalidated or isinstance(exc, InterfaceError)
        or sqlstate.startswith(("08", "57P")) or "database is locked" in str(exc.orig)
    )


# Codes that say a part of the system is away: worth a line in the log each time.
_OUTAGES = frozenset({"insufficient_storage", "queue_unavailable", "store_unavailable", "service_unavailable", "queue_timeout", "worker_timeout"})

# Every exception api_error maps gets the one handler below.
_MAPPED: tuple[type[Exception], ...] = (*_PLAIN, *(cls for cls, _ in _RULES))


def install_error_handlers(app: FastAPI) -> None:
    async def _mapped(request: Request, exc: Exception) -> JSONResponse:
        error = api_error(exc)
        if error is None:  # a database error that is a bug, not an outage
            return await _unexpected(request, exc)
        if error.code in _OUTAGES:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return error.response()

    for exception in _MAPPED:
        app.add_exception_handler(exception, _mapped)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(exc)
        return error_response(400, message, "invalid_request_error", param, "invalid_value" if param else None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        else:
            message = str(exc.detail)
        return error_response(exc.status_code, message, "invalid_request_error", None, None, getattr(exc, "headers", None))

    app.add_exception_handler(Exception, _unexpected)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error; the request id names it in the server log", "server_error")
