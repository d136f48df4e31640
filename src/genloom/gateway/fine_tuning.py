"""Fine-tuning jobs as clients see them (OpenAI's fine-tuning API): checked and stored at
creation, run later by a trainer (`genloom.gateway.fine_tune_runner`), read, listed and cancelled here.

A job's training data is read when it is created: an uploaded file (`file-…`, purpose
fine-tune) or a dataset version (`name@vN`, its train split; its eval split is the validation
data unless one is given), checked line by line, and kept as a blob, so the job trains on what
was checked even if the file or dataset changes later. The base is a local text model; its
version is fixed at creation."""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from genloom.config import FineTuningSettings, ModelKind
from genloom.datasets.build import chat_line
from genloom.gateway.datasets import DatasetService, parse_ref
from genloom.gateway.errors import InvalidRequest, ModelNotFound
from genloom.jobs import RequestClass
from genloom.queue.scheduler import TenantQueueFull
from genloom.registry.registry import ModelRegistry, settings_of
from genloom.registry.versions import UnknownModel
from genloom.store.datasets import DatasetNotFound
from genloom.store.files import FileNotFound, FileStore
from genloom.store.fine_tuning import QUEUED, FineTuningJob, FineTuningStore

SUFFIX = re.compile(r"^[A-Za-z0-9_\-]{1,40}$")
TARGET_MODULE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class Hyperparameters:
    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float

    @classmethod
    def of(cls, given: dict[str, Any] | None, defaults: FineTuningSettings, param: str) -> Hyperparameters:
        given = dict(given or {})
        unknown = set(given) - {"n_epochs", "batch_size", "learning_rate_multiplier"}
        if unknown:
            raise InvalidRequest(f"unknown hyperparameter {sorted(unknown)[0]!r}", f"{param}.{sorted(unknown)[0]}")

        def pick(name: str, default: Any, kind: type, low: float, high: float) -> Any:
            value = given.get(name, "auto")
            if value == "auto" or value is None:
                return default
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidRequest(f"{name} must be 'auto' or a number", f"{param}.{name}")
            if not low <= value <= high:
                raise InvalidRequest(f"{name} must be between {low} and {high}", f"{param}.{name}")
            if kind is int and not float(value).is_integer():
                raise InvalidRequest(f"{name} must be a whole number", f"{param}.{name}")
            return kind(value)

        return cls(n_epochs=pick("n_epochs", defaults.default_epochs, int, 1, 50),
                   batch_size=pick("batch_size", defaults.default_batch_size, int, 1, 256),
                   learning_rate_multiplier=pick("learning_rate_multiplier", 1.0, float, 1e-4, 100))


def lora_of(given: dict[str, Any] | None) -> dict[str, Any]:
    """Genloom's extension `lora: {r, alpha, dropout, target_modules}`, checked, with defaults."""
    given = dict(given or {})
    unknown = set(given) - {"r", "alpha", "dropout", "target_modules"}
    if unknown:
        raise InvalidRequest(f"unknown lora setting {sorted(unknown)[0]!r}", f"lora.{sorted(unknown)[0]}")
    r, alpha, dropout, targets = given.get("r", 8), given.get("alpha"), given.get("dropout", 0.0), given.get("target_modules")
    if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= 256:
        raise InvalidRequest("lora.r must be an integer from 1 to 256", "lora.r")
    alpha = 2 * r if alpha is None else alpha
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha <= 4096:
        raise InvalidRequest("lora.alpha must be a number above 0 (default 2r)", "lora.alpha")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InvalidRequest("lora.dropout must be in [0, 1)", "lora.dropout")
    if targets is not None and (not isinstance(targets, list) or not targets
                                or not all(isinstance(t, str) and TARGET_MODULE.match(t) for t in targets)):
        raise InvalidRequest("lora.target_modules must be a list of module names (e.g. ['q_proj', 'v_proj'])",
                             "lora.target_modules")
    return {"r": r, "alpha": alpha, "dropout": float(dropout), "target_modules": targets}


def conversations(data: bytes, param: str) -> list[list[dict[str, str]]]:
    """The rows of a JSONL file in OpenAI's chat fine-tuning format; a 400 naming the first bad line."""
    rows = []
    for number, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        problem, messages = chat_line(line)
        if problem is not None:
            raise InvalidRequest(f"line {number}: {problem}", param)
        rows.append(list(messages))
    return rows


class FineTuningService:
    def __init__(self, *, store: FineTuningStore, files: FileStore, datasets: DatasetService, registry: ModelRegistry,
                 settings: FineTuningSettings) -> None:
        self.store = store
        self._files = files
        self._datasets = datasets
        self._registry = registry
        self._settings = settings

    async def create(self, *, tenant: str, admin: bool, model: str, training_file: str, validation_file: str | None = None,
                     suffix: str | None = None, method: dict[str, Any] | None = None,
                     hyperparameters: dict[str, Any] | None = None, lora: dict[str, Any] | None = None,
                     seed: int | None = None, metadata: dict[str, str] | None = None) -> FineTuningJob:
        version = self._base(model)
        if not admin and await self.store.active_count(tenant) >= self._settings.max_jobs_per_tenant:
            raise TenantQueueFull(tenant, RequestClass.ASYNC, self._settings.max_jobs_per_tenant, retry_after_s=60)
        if suffix is not None and not SUFFIX.match(suffix):
            raise InvalidRequest("suffix is 1 to 40 letters, digits, '-' or '_'", "suffix")
        hyper_param = "hyperparameters"
        if method is not None and not isinstance(method, dict):
            raise InvalidRequest("method must be an object", "method")
        if method is not None:
            if method.get("type") != "supervised":
                raise InvalidRequest(f"method {method.get('type')!r} is not supported; use 'supervised'", "method.type")
            supervised = method.get("supervised") or {}
            if not isinstance(supervised, dict):
                raise InvalidRequest("method.supervised must be an object", "method.supervised")
            hyperparameters, hyper_param = supervised.get("hyperparameters"), "method.supervised.hyperparameters"
        if hyperparameters is not None and not isinstance(hyperparameters, dict):
            raise InvalidRequest("hyperparameters must be an object", hyper_param)
        hyper = Hyperparameters.of(hyperparameters, self._settings, hyper_param)
        lora_settings = lora_of(lora)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31):
            raise InvalidRequest("seed must be an integer from 0 to 2147483647", "seed")
        train_data, eval_data, lineage = await self._data(training_file, tenant, admin, "training_file")
        train_rows = await asyncio.to_thread(conversations, train_data, "training_file")
        if not train_rows:
            raise InvalidRequest("the training file holds no examples", "training_file")
        if len(train_rows) > self._settings.max_rows:
            raise InvalidRequest(f"{len(train_rows)} examples; at most {self._settings.max_rows}", "training_file")
        if validation_file is not None:
            eval_data, _, _ = await self._data(validation_file, tenant, admin, "validation_file")
        if eval_data:
            await asyncio.to_thread(conversations, eval_data, "validation_file")
        blobs = self._files.blobs
        now = datetime.now(UTC)
        job = FineTuningJob(
            id=f"ftjob-{uuid.uuid4().hex[:24]}", tenant=tenant, model=version.name, base_version=version.key,
            training_file=training_file, validation_file=validation_file,
            training_blob=await asyncio.to_thread(blobs.put, train_data),
            validation_blob=await asyncio.to_thread(blobs.put, eval_data) if eval_data else None,
            suffix=suffix, hyperparameters=hyper.__dict__, lora=lora_settings,
            seed=seed if seed is not None else random.randrange(2**31), status=QUEUED, metadata=metadata,
            created_by_admin=admin,
            lineage=lineage | {"training_rows": len(train_rows)}, created_at=now,
        )
        await self.store.create(job)
        await self.store.add_event(job.id, message=f"created: {len(train_rows)} training examples on {version.key}", now=now)
        return job

    def _base(self, model: str):
        try:
            version = self._registry.catalog.version(model)
        except UnknownModel as e:
            raise ModelNotFound(model, e.known) from None
        settings = settings_of(version)
        if settings.kind is not ModelKind.TEXT:
            raise InvalidRequest(f"model {model} is a {settings.kind.value} model; only local text models can be fine-tuned",
                                 "model")
        if settings.adapter is not None or settings.adapter_blob is not None:
            base = version.metadata.get("base_version", "its base")
            raise InvalidRequest(f"{version.key} is itself fine-tuned (an adapter on {base}); fine-tune the base with "
                                 "all the data instead", "model")
        return version

    async def _data(self, ref: str, tenant: str, admin: bool, param: str) -> tuple[bytes, bytes, dict[str, Any]]:
        """(train JSONL, eval JSONL or b"", lineage) of a file id or a dataset version."""
        if ref.startswith("file-"):
            try:
                record = await self._files.get(ref, tenant=tenant)
            except FileNotFound:
                raise InvalidRequest(f"no file '{ref}' of this tenant", param) from None
            if record.purpose != "fine-tune":
                raise InvalidRequest(f"file '{ref}' was uploaded for {record.purpose}, not fine-tune", param)
            return await self._files.content(record), b"", {"file": ref}
        try:
            name, number = parse_ref(ref)
            found = await self._datasets.store.get(name, number)
        except (InvalidRequest, DatasetNotFound):
            raise InvalidRequest(f"'{ref}' is neither a file id (file-…) nor a dataset version (name@vN)", param) from None
        if not admin and found.tenant != tenant:
            raise InvalidRequest(f"dataset '{ref}' is not this tenant's", param)
        return (await self._datasets.export(found, "train"), await self._datasets.export(found, "eval"),
                {"dataset": found.ref, "dataset_sha256": found.sha256, "metric": found.manifest.get("metric")})
