"""Runs fine-tuning jobs: a task on the event loop claims the oldest queued job whose base version
this process holds, and trains it on a thread (`runtimes.lora.LoraTrainer`), one job at a time
per process, below serving: between steps the trainer waits while requests are queued or running
here (`busy`), and stops at the next step when the job is cancelled or the process stops.

Progress is written as it comes: a metrics event per step (at most every `event_every_s`), a
checkpoint row per saved checkpoint, the lease renewed with an estimated finish. A process that
dies mid-run leaves the job running under a lease that runs out; the next trainer to claim it
resumes from the last checkpoint on disk (`data_dir/fine_tuning/<job id>`). A process that stops
normally puts the job back in the queue itself.

On success the adapter is registered as a new version of the base model (`register`, given by
the composition root) under the alias that `ft:BASE:SUFFIX:ID` resolves to, with the run's figures
and the data's lineage in its metadata."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from genloom.config import FineTuningSettings
from genloom.gateway.fine_tune_gate import PROBES, Evaluation, TaskMetric, judge
from genloom.gateway.fine_tuning import conversations
from genloom.runtimes.lora import LoraSettings, LoraTrainer, Result, Step, TrainingInputError, TrainSettings, answers, merged_model
from genloom.store.files import BlobStore
from genloom.store.fine_tuning import CANCELLED, FAILED, SUCCEEDED, FineTuningJob, FineTuningStore

log = logging.getLogger("genloom.fine_tuning")
MAX_ATTEMPTS = 3  # a job whose trainer died this many times fails

# (job, adapter, result, evaluation) -> (version key, fine_tuned_model, rollout id or None)
Register = Callable[[FineTuningJob, Path, Result, Evaluation], Awaitable[tuple[str, str, str | None]]]


def short_id(job_id: str) -> str:
    return job_id.removeprefix("ftjob-")[:8]


def fine_tuned_name(job: FineTuningJob) -> str:
    return f"ft:{job.model}:{job.suffix or 'custom'}:{short_id(job.id)}"


class FineTuneRunner:
    def __init__(self, *, store: FineTuningStore, blobs: BlobStore, settings: FineTuningSettings, data_dir: Path,
                 bases: Callable[[], dict[str, Path]], register: Register, busy: Callable[[], bool] = lambda: False,
                 flagged: Callable[[list[str]], int] = lambda texts: 0, device: str = "cpu",
                 event_every_s: float = 0.5) -> None:
        """`bases`: the base versions this process can train on (name@vN → model directory);
        `flagged`: how many of some answers the output guards would flag (the evaluation gate)."""
        self._store = store
        self._blobs = blobs
        self._settings = settings
        self._root = Path(data_dir) / "fine_tuning"
        self._bases = bases
        self._register = register
        self._busy = busy if settings.pause_while_serving else (lambda: False)
        self._flagged = flagged
        self._device = device
        self._event_every_s = event_every_s
        self._owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stopping = False
        self._lost: set[str] = set()  # jobs whose lease another trainer took
        self._eta: datetime | None = None
        self._task: asyncio.Task | None = None
        self.running: str | None = None  # the job id being trained

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run_forever(), name="genloom-fine-tuning")

    async def stop(self) -> None:
        """The running job stops at its next step and goes back to the queue."""
        self._stopping = True
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=60)
            except TimeoutError:
                self._task.cancel()

    async def _run_forever(self) -> None:
        while not self._stopping:
            try:
                job = await self._store.claim(owner=self._owner, lease_s=self._settings.lease_s, now=datetime.now(UTC),
                                              models=set(self._bases()))
            except Exception as e:  # the store is down: try again later
                log.warning("could not look for fine-tuning jobs: %s", e)
                job = None
            if job is None:
                await asyncio.sleep(self._settings.poll_s)
                continue
            self.running = job.id
            try:
                await self.run(job)
            except Exception:
                log.exception("fine-tuning job %s failed outside training", job.id)
            finally:
                self.running = None

    async def run(self, job: FineTuningJob) -> None:
        """Train `job` (leased to this runner), its lease renewed by a task of its own meanwhile."""
        renewing = asyncio.get_running_loop().create_task(self._renew(job), name=f"genloom-lease-{job.id}")
        try:
            await self._run(job)
        except Exception as e:  # anything outside training itself: the job fails with the reason
            log.exception("fine-tuning job %s failed", job.id)
            await self._fail(job, "internal_error", f"{type(e).__name__}: {e}")
        finally:
            renewing.cancel()

    async def _renew(self, job: FineTuningJob) -> None:
        """Keep the lease while the job is here (loading, training, pausing, evaluating, registering)."""
        while True:
            await asyncio.sleep(self._settings.lease_s / 4)
            try:
                if not await self._store.renew(job.id, owner=self._owner, lease_s=self._settings.lease_s,
                                               now=datetime.now(UTC), estimated_finish=self._eta):
                    self._lost.add(job.id)  # another trainer took it (this one was presumed dead): stop
                    return
            except Exception as e:  # the store is away for a moment; the lease has some time left
                log.warning("could not renew the lease of %s: %s", job.id, e)

    async def _run(self, job: FineTuningJob) -> None:
        loop = asyncio.get_running_loop()
        now = lambda: datetime.now(UTC)  # noqa: E731
        if job.attempts > MAX_ATTEMPTS:
            await self._fail(job, "too_many_attempts", f"the job was started {job.attempts - 1} times without finishing")
            return
        base = self._bases().get(job.base_version)
        if base is None:
            await self._fail(job, "base_unavailable", f"the base version {job.base_version} is not served here any more")
            return
        try:
            train = conversations(await asyncio.to_thread(self._blobs.get, job.training_blob), "training_file")
            evals = conversations(await asyncio.to_thread(self._blobs.get, job.validation_blob), "validation_file") \
                if job.validation_blob else []
        except FileNotFoundError:
            await self._fail(job, "training_data_gone", "the job's training data is no longer stored (deleted with a "
                                                        "user's data, or the blob store lost it)")
            return
        except Exception as e:
            await self._fail(job, "invalid_training_data", str(e))
            return
        hyper = job.hyperparameters
        trainer = LoraTrainer(
            base_path=base, out_dir=self._root / job.id, device=self._device,
            lora=LoraSettings(r=job.lora["r"], alpha=job.lora["alpha"], dropout=job.lora["dropout"],
                              target_modules=tuple(job.lora["target_modules"]) if job.lora.get("target_modules") else None),
            train=TrainSettings(n_epochs=hyper["n_epochs"], batch_size=hyper["batch_size"],
                                learning_rate=self._settings.base_learning_rate * hyper["learning_rate_multiplier"],
                                max_tokens=self._settings.max_tokens, checkpoint_every=self._settings.checkpoint_every,
                                seed=job.seed),
        )
        resuming = trainer.latest_checkpoint()
        await self._store.add_event(job.id, now=now(), message=(
            f"resuming from the checkpoint at step {resuming}" if resuming else f"training started on {job.base_version}"))
        state = {"cancelled": False, "last_event": 0.0, "checked": 0.0}

        def call(coroutine: Awaitable[Any]) -> Any:
            return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=60)

        def on_step(step: Step) -> None:
            t = time.monotonic()
            if t - state["last_event"] >= self._event_every_s or step.step == step.total_steps:
                state["last_event"] = t
                call(self._store.add_event(job.id, now=now(), type="metrics", message=f"step {step.step}/{step.total_steps}: "
                                           f"training loss {step.loss:.4f}", data={
                                               "step": step.step, "total_steps": step.total_steps, "epoch": step.epoch + 1,
                                               "train_loss": round(step.loss, 6), "eta_s": round(step.eta_s, 1)}))
            self._eta = now() + timedelta(seconds=step.eta_s)

        def on_checkpoint(step: int, path: Path) -> None:
            call(self._store.add_checkpoint(job.id, step=step, now=now(), metrics={"step": step}))
            call(self._store.add_event(job.id, now=now(), message=f"checkpoint saved at step {step}"))

        def should_stop() -> bool:
            t = time.monotonic()
            if t - state["checked"] >= 1.0:
                state["checked"] = t
                state["cancelled"] = call(self._store.cancel_requested(job.id))
            return state["cancelled"] or job.id in self._lost or self._stopping

        def should_pause() -> bool:
            try:
                return self._busy()
            except Exception:  # the queue cannot be read for a moment: train on
                return False

        try:
            result = await asyncio.to_thread(trainer.run, train, evals, on_step=on_step, on_checkpoint=on_checkpoint,
                                             should_stop=should_stop, should_pause=should_pause)
        except TrainingInputError as e:
            await self._fail(job, "invalid_training_data", str(e))
            return
        except Exception as e:
            log.exception("fine-tuning job %s failed", job.id)
            await self._fail(job, "training_failed", f"{type(e).__name__}: {e}")
            return
        if job.id in self._lost:
            return
        if result.stopped:
            if state["cancelled"]:
                await self._store.add_event(job.id, now=now(), message=f"cancelled at step {result.steps}")
                await self._store.finish(job.id, owner=self._owner, status=CANCELLED, now=now(),
                                         trained_tokens=result.trained_tokens)
            else:  # this process is stopping: the job waits for the next trainer, which resumes it
                await self._store.add_event(job.id, now=now(), message=f"paused at step {result.steps}: the server stopped")
                await self._store.release(job.id, owner=self._owner)
            return
        await self._store.add_event(job.id, now=now(), message="evaluating against the base: eval loss, guarded probes, task metric")
        try:
            evaluation = await asyncio.to_thread(self._evaluate, job, base, result, evals)
        except Exception as e:
            log.exception("evaluating %s failed", job.id)
            await self._fail(job, "evaluation_failed", f"{type(e).__name__}: {e}")
            return
        await self._store.add_event(
            job.id, now=now(), level="info" if evaluation.passed else "warn", data=evaluation.as_json(),
            message="evaluation passed" if evaluation.passed else "evaluation failed: " + "; ".join(evaluation.reasons))
        if not await self._store.renew(job.id, owner=self._owner, lease_s=self._settings.lease_s, now=now()):
            return  # another trainer has the job now: it registers what it trains
        try:
            version, name, rollout = await self._register(job, result.adapter_dir, result, evaluation)
        except Exception as e:
            log.exception("registering the fine-tuned model of %s failed", job.id)
            await self._fail(job, "registration_failed", f"{type(e).__name__}: {e}")
            return
        figures = {"steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss,
                   "base_eval_loss": result.base_eval_loss, "version": version, "checkpoints": result.checkpoints,
                   "resumed_from": result.resumed_from, "evaluation": evaluation.as_json(), "rollout": rollout}
        if rollout is not None:
            await self._store.add_event(job.id, now=now(), message=f"canary rollout {rollout} started for {version}")
        elif evaluation.passed and not job.created_by_admin:
            await self._store.add_event(job.id, now=now(), message=(
                f"{version} serves this tenant only, as {name}; an admin may roll it out to everyone"))
        elif evaluation.passed:
            await self._store.add_event(job.id, now=now(), level="warn", message=(
                f"no canary started for {version}: fine_tuning.auto_canary is off, or the model has an active rollout"))
        await self._store.add_event(job.id, now=now(), message=f"fine-tuned model {name} registered as {version}",
                                    data={k: v for k, v in figures.items() if k != "evaluation"})
        if await self._store.finish(job.id, owner=self._owner, status=SUCCEEDED, now=now(), fine_tuned_model=name,
                                    trained_tokens=result.trained_tokens, result=figures):
            shutil.rmtree(trainer.out_dir / "checkpoints", ignore_errors=True)  # done: the optimizer states can go

    def _evaluate(self, job: FineTuningJob, base: Path, result: Result, evals: list[list[dict[str, str]]]) -> Evaluation:
        """The gate's figures: the base's answers first, then the same model with the adapter merged in."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(base, local_files_only=True, dtype=torch.float32).to(self._device)
        probes = [[{"role": "user", "content": p}] for p in PROBES]
        metric = TaskMetric.of((job.lineage or {}).get("metric"))
        rows = evals[:50] if metric is not None else []
        prompts, targets = [r[:-1] for r in rows], [r[-1]["content"] for r in rows]
        limit = self._settings.gate_max_tokens
        base_probes = answers(model, tokenizer, probes, max_new_tokens=limit)
        base_task = answers(model, tokenizer, prompts, max_new_tokens=limit) if rows else []
        tuned = merged_model(model, result.adapter_dir)  # merges in place: the base's answers come first
        tuned_probes = answers(tuned, tokenizer, probes, max_new_tokens=limit)
        tuned_task = answers(tuned, tokenizer, prompts, max_new_tokens=limit) if rows else []
        return judge(eval_loss=result.eval_loss, base_eval_loss=result.base_eval_loss, probes=len(probes),
                     flagged=self._flagged(tuned_probes), base_flagged=self._flagged(base_probes), metric=metric,
                     metric_score=metric.score(tuned_task, targets) if metric and rows else None,
                     base_metric_score=metric.score(base_task, targets) if metric and rows else None)

    async def _fail(self, job: FineTuningJob, code: str, message: str) -> None:
        now = datetime.now(UTC)
        await self._store.add_event(job.id, now=now, level="error", message=message)
        await self._store.finish(job.id, owner=self._owner, status=FAILED, now=now,
                                 error={"code": code, "message": message, "param": None})


def training_metadata(job: FineTuningJob, result: Result, evaluation: Evaluation) -> dict[str, Any]:
    """What a registered fine-tuned version records of how it was made, and how it did at the gate."""
    owner = None if job.created_by_admin else job.tenant
    return {"evaluation": evaluation.as_json(), "owner_tenant": owner, "fine_tuning_job": job.id, "fine_tuned_model": fine_tuned_name(job), "base_version": job.base_version,
            "training_file": job.training_file, "validation_file": job.validation_file, "lineage": job.lineage,
            "hyperparameters": job.hyperparameters, "lora": job.lora, "seed": job.seed,
            "figures": {"steps": result.steps, "trained_tokens": result.trained_tokens, "train_loss": result.train_loss,
                        "eval_loss": result.eval_loss, "base_eval_loss": result.base_eval_loss}}

