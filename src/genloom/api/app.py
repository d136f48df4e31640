"""The FastAPI application, declared from explicit lists of routers and middleware."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager

from fastapi import Depends, FastAPI
from starlette.middleware import Middleware

from genloom import __version__
from genloom.api.errors import install_error_handlers
from genloom.api.middleware import (
    AccessLogMiddleware, BodyLimitMiddleware, JsonDepthMiddleware, RequestIdMiddleware, TracingMiddleware,
)
from genloom.api.callers import authentication
from genloom.api.routes_admin import build_admin_router
from genloom.api.routes_moderations import build_moderations_router
from genloom.api.routes_embeddings import build_embeddings_router
from genloom.api.routes_feedback import build_feedback_router
from genloom.api.routes_datasets import build_datasets_router
from genloom.api.routes_fine_tuning import build_fine_tuning_router
from genloom.api.routes_files import build_files_router
from genloom.api.routes_health import build_health_router
from genloom.api.routes_metrics import build_metrics_router
from genloom.api.routes_images import build_images_router
from genloom.api.routes_jobs import build_jobs_router
from genloom.api.routes_me import build_me_router
from genloom.api.routes_usage import build_usage_router
from genloom.store.usage import UsageSeries
from genloom.api.routes_models import Loaded, build_models_router
from genloom.api.routes_registry import build_registry_router
from genloom.api.routes_templates import build_templates_router
from genloom.api.routes_batches import build_batches_router
from genloom.api.routes_responses import build_responses_router
from genloom.api.routes_text import build_text_router
from genloom.config import Settings
from genloom.gateway import Readiness, TextService
from genloom.gateway.auth import Authenticator, TenantAdmin
from genloom.gateway.batches import BatchService
from genloom.gateway.breaker import CircuitBreaker
from genloom.gateway.pipeline import TextPipeline
from genloom.gateway.embedding_service import EmbeddingService
from genloom.gateway.feedback import FeedbackService
from genloom.gateway.datasets import DatasetService
from genloom.gateway.privacy import DataDeletion
from genloom.gateway.fine_tuning import FineTuningService
from genloom.gateway.image_service import ImageService
from genloom.gateway.job_service import JobService
from genloom.gateway.templates import TemplateService
from genloom.guardrails.engine import Guardrails
from genloom.guardrails.policy import Policies
from genloom.registry.registry import ModelRegistry
from genloom.store.guard_audit import GuardAudit
from genloom.registry.rollouts import RolloutService
from genloom.store.responses import ResponseStore
from genloom.telemetry.monitors import Monitors
from genloom.telemetry.tracing import NO_TRACING, Tracing
from genloom.gateway.presence import WorkerPresence
from genloom.gateway.readiness import WorkerStatus


def create_app(
    *,
    service: TextService,
    pipeline: TextPipeline,
    jobs: JobService,
    embeddings: EmbeddingService,
    images: ImageService,
    templates: TemplateService,
    authenticator: Authenticator,
    admin: TenantAdmin,
    breakers: dict[str, CircuitBreaker],
    readiness: Readiness,
    settings: Settings,
    registry: ModelRegistry,
    rollouts: RolloutService,
    loaded_models: Loaded,
    running_models: Callable[[], set[str]],
    model_work: Callable[[str], Awaitable[int]],
    local_workers: Callable[[], list[WorkerStatus]],
    presence: WorkerPresence | None = None,
    list_workers: Callable[[], Awaitable[list[dict]]] | None = None,
    metrics: Callable[[], bytes] | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]] | None = None,
    tracing: Tracing = NO_TRACING,
    monitors: Monitors | None = None,
    responses: ResponseStore | None = None,
    batches: BatchService | None = None,
    guardrails: Guardrails | None = None,
    policies: Policies | None = None,
    audit: GuardAudit | None = None,
    feedback: FeedbackService | None = None,
    datasets: DatasetService | None = None,
    deletion: DataDeletion | None = None,
    fine_tuning: FineTuningService | None = None,
    usage: UsageSeries | None = None,
) -> FastAPI:
    traced = [Middleware(TracingMiddleware, tracing=tracing)] if tracing.enabled else []
    app = FastAPI(
        title="Genloom",
        version=__version__,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestIdMiddleware),
            *traced,
            *([Middleware(AccessLogMiddleware)] if settings.logging.access_log else []),
            Middleware(BodyLimitMiddleware, max_body_bytes=settings.api.max_body_bytes,
                       uploads={"/v1/files": settings.api.max_file_bytes}),
            Middleware(JsonDepthMiddleware, max_depth=settings.api.max_json_depth),
        ],
    )
    app.include_router(build_health_router(
        readiness, service, loaded=lambda: loaded_models().keys(), in_flight=lambda: pipeline.in_flight,
        workers=local_workers, presence=presence,
    ))
    if metrics is not None:
        app.include_router(build_metrics_router(metrics, token=_metrics_token(settings)))
    # Every /v1 route needs a key: the dependency puts the caller's principal on the request.
    authenticate_request = authentication(
        mode=settings.auth, authenticator=authenticator, classification=settings.classification
    )
    authenticate = Depends(authenticate_request)
    routers = (
        build_me_router(),
        *([build_usage_router(usage)] if usage is not None else []),
        build_models_router(registry, loaded_models),
        build_text_router(pipeline, templates, settings.api),
        *([build_responses_router(pipeline, responses, settings.api)] if responses is not None else []),
        *([build_batches_router(batches, settings.api)] if batches is not None else []),
        *([build_feedback_router(feedback)] if feedback is not None else []),
        *([build_datasets_router(datasets, deletion)] if datasets is not None and deletion is not None else []),
        *([build_fine_tuning_router(fine_tuning)] if fine_tuning is not None else []),
        build_jobs_router(jobs, settings.api, settings.jobs),
        build_embeddings_router(embeddings),
        build_images_router(images),
        build_templates_router(templates, pipeline, settings.api),
        build_admin_router(admin, breakers, jobs, list_workers=list_workers, monitors=monitors, policies=policies, audit=audit,
                           feedback=feedback),
        *([build_moderations_router(guardrails, max_inputs=settings.guardrails.max_moderation_inputs)]
          if guardrails is not None else []),
        build_registry_router(
            registry, rollouts, upstream_allow_hosts=frozenset(settings.upstream_allow_hosts), loaded=loaded_models,
            running=running_models, work=model_work,
        ),
    )
    for router in routers:
        app.include_router(router, dependencies=[authenticate])
    # File content also opens with a signed link (an image response's url), so it checks keys itself.
    app.include_router(build_files_router(images.files, images.signer, authenticate_request))
    if settings.console.enabled:  # static pages; what they show comes from the routes above, with the user's key
        from genloom.console import build_console_router

        app.include_router(build_console_router())
    install_error_handlers(app)
    return app


def create_worker_app(
    *, readiness: Readiness, service: TextService, loaded_models: Loaded, local_workers: Callable[[], list[WorkerStatus]],
    settings: Settings, metrics: Callable[[], bytes] | None = None,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> FastAPI:
    """A worker process's HTTP face: /healthz and /readyz for its orchestrator, nothing else."""
    app = FastAPI(title="Genloom worker", version=__version__, lifespan=lifespan)
    app.include_router(build_health_router(
        readiness, service, loaded=lambda: loaded_models().keys(), in_flight=lambda: 0, workers=local_workers
    ))
    if metrics is not None:
        app.include_router(build_metrics_router(metrics, token=_metrics_token(settings)))
    return app


def _metrics_token(settings: Settings) -> str | None:
    token = settings.metrics.token
    return token.get_secret_value() if token is not None else None
