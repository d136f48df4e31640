"""LoRA fine-tuning of a local causal LM with PEFT: a plain training loop (no Trainer) so that a
step can pause for serving, stop for a cancel, and save a checkpoint that a later run resumes
from exactly (adapter weights, optimizer, scheduler, the data order and the step).

Nothing here knows about jobs or HTTP; `genloom.gateway.fine_tune_runner` drives `LoraTrainer.run`.

Conversations are rendered with the model's chat template; only the assistant's final answer is
learned (the prompt's tokens carry no loss)."""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ADAPTER_DIR = "adapter"
STATE_FILE = "trainer_state.pt"


class TrainingInputError(ValueError):
    """The data or settings cannot be trained on (no usable rows, a model without a chat template)."""


@dataclass(frozen=True)
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None  # None: every linear layer of attention and MLP


@dataclass(frozen=True)
class TrainSettings:
    n_epochs: int = 3
    batch_size: int = 4
    learning_rate: float = 2e-3  # the base rate; OpenAI's learning_rate_multiplier scales it
    max_tokens: int = 512  # a longer conversation is cut (its prompt first)
    checkpoint_every: int = 20  # steps
    seed: int = 0
    warmup_steps: int = 0


@dataclass
class Step:
    step: int
    total_steps: int
    epoch: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / max(1, self.step) * (self.total_steps - self.step)


@dataclass
class Result:
    adapter_dir: Path
    steps: int
    trained_tokens: int
    train_loss: float | None
    eval_loss: float | None  # mean per-token loss of the eval rows (None without any)
    base_eval_loss: float | None  # the same for the base model, before training
    resumed_from: int | None = None  # the checkpoint's step a run resumed from
    stopped: bool = False  # cancelled before the end
    checkpoints: list[int] = field(default_factory=list)


Conversation = list[dict[str, str]]


def _encode(tokenizer: Any, messages: Conversation, max_tokens: int) -> tuple[list[int], list[int]] | None:
    """(input ids, labels): the prompt's labels are -100. None when nothing is left to learn."""
    def ids(value: Any) -> list[int]:
        return list(value["input_ids"] if hasattr(value, "keys") else value)

    full = ids(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
    prompt = ids(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=False))
    start = len(prompt) if full[:len(prompt)] == prompt else 0
    if start >= len(full):
        return None
    if len(full) > max_tokens:  # keep the answer: cut the prompt from the left
        cut = len(full) - max_tokens
        if cut >= start:
            full, start = full[-max_tokens:], 0
        else:
            full, start = full[cut:], start - cut
    labels = [-100] * start + full[start:]
    return full, labels


class LoraTrainer:
    def __init__(self, *, base_path: Path, out_dir: Path, lora: LoraSettings, train: TrainSettings,
                 device: str = "cpu") -> None:
        self.base_path = Path(base_path)
        self.out_dir = Path(out_dir)
        self.lora = lora
        self.train = train
        self.device = torch.device(device)

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_dir(self, step: int) -> Path:
        return self.out_dir / "checkpoints" / f"step-{step:07d}"

    def latest_checkpoint(self) -> int | None:
        root = self.out_dir / "checkpoints"
        # Only whole checkpoints: a kill mid-save leaves step-….tmp, which is not one.
        steps = sorted(int(p.name[5:]) for p in root.glob("step-*")
                       if p.name[5:].isdigit() and (p / STATE_FILE).is_file()) if root.is_dir() else []
        return steps[-1] if steps else None

    def _save(self, model: Any, optimizer: Any, scheduler: Any, step: int, epoch: int, order: list[int], losses: list[float]) -> Path:
        final = self.checkpoint_dir(step)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp / ADAPTER_DIR)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step, "epoch": epoch,
                    "order": order, "losses": losses, "rng": torch.get_rng_state()}, tmp / STATE_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)  # a checkpoint is whole or absent: a kill mid-save leaves only the .tmp
        return final

    # -- the run -------------------------------------------------------------------------------

    def run(self, train_rows: list[Conversation], eval_rows: list[Conversation], *,
            on_step: Callable[[Step], None] = lambda s: None, on_checkpoint: Callable[[int, Path], None] = lambda s, p: None,
            should_stop: Callable[[], bool] = lambda: False, should_pause: Callable[[], bool] = lambda: False) -> Result:
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
        from safetensors.torch import load_file
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.manual_seed(self.train.seed)
        tokenizer = AutoTokenizer.from_pretrained(self.base_path, local_files_only=True)
        if not getattr(tokenizer, "chat_template", None):
            raise TrainingInputError(f"{self.base_path} has no chat template: conversations cannot be rendered for it")
        encoded = [e for e in (_encode(tokenizer, rows, self.train.max_tokens) for rows in train_rows) if e is not None]
        evals = [e for e in (_encode(tokenizer, rows, self.train.max_tokens) for rows in eval_rows) if e is not None]
        if not encoded:
            raise TrainingInputError("no training row has an answer to learn")
        base = AutoModelForCausalLM.from_pretrained(self.base_path, local_files_only=True, dtype=torch.float32).to(self.device)
        base_eval = self.evaluate(base, evals, tokenizer.pad_token_id) if evals else None
        targets = list(self.lora.target_modules) if self.lora.target_modules else "all-linear"
        model = get_peft_model(base, LoraConfig(r=self.lora.r, lora_alpha=self.lora.alpha, lora_dropout=self.lora.dropout,
                                                target_modules=targets, task_type="CAUSAL_LM"))
        steps_per_epoch = math.ceil(len(encoded) / self.train.batch_size)
        total = steps_per_epoch * self.train.n_epochs
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=self.train.learning_rate)
        warmup = self.train.warmup_steps

        def rate(step: int) -> float:  # linear warm-up, then linear decay to 10%
            if step < warmup:
                return (step + 1) / warmup
            return max(0.1, 1 - 0.9 * (step - warmup) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
        step, epoch, losses, resumed = 0, 0, [], None
        order = self._order(len(encoded), 0)
        latest = self.latest_checkpoint()
        if latest is not None:
            ckpt = self.checkpoint_dir(latest)
            set_peft_model_state_dict(model, load_file(str(ckpt / ADAPTER_DIR / "adapter_model.safetensors")))
            state = torch.load(ckpt / STATE_FILE, weights_only=False)
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, epoch, order, losses = state["step"], state["epoch"], state["order"], state["losses"]
            torch.set_rng_state(state["rng"])
            resumed = latest
        checkpoints: list[int] = []
        trained_tokens = 0
        started = time.monotonic()
        model.train()
        stopped = False
        while step < total:
            if should_stop():
                stopped = True
                break
            while should_pause() and not should_stop():
                time.sleep(0.05)  # serving first: a step waits while requests do
            within = step - epoch * steps_per_epoch
            if within >= steps_per_epoch:
                epoch += 1
                order = self._order(len(encoded), epoch)
                within = 0
            batch = [encoded[i] for i in order[within * self.train.batch_size:(within + 1) * self.train.batch_size]]
            input_ids, labels, mask = _pad(batch, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
            out = model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), labels=labels.to(self.device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            trained_tokens += int(mask.sum())
            loss = float(out.loss.detach())
            losses.append(loss)
            on_step(Step(step=step, total_steps=total, epoch=epoch, loss=loss, elapsed_s=time.monotonic() - started))
            if step % self.train.checkpoint_every == 0 or step == total:
                path = self._save(model, optimizer, scheduler, step, epoch, order, losses)
                checkpoints.append(step)
                on_checkpoint(step, path)
        adapter_dir = self.out_dir / ADAPTER_DIR
        eval_loss = None
        if not stopped:
            model.eval()
            eval_loss = self.evaluate(model, evals, tokenizer.pad_token_id) if evals else None
            shutil.rmtree(adapter_dir, ignore_errors=True)
            model.save_pretrained(adapter_dir)
            (adapter_dir / "genloom_training.json").write_text(json.dumps({
                "base": str(self.base_path), "lora": asdict(self.lora), "train": asdict(self.train), "steps": step,
                "train_rows": len(encoded), "eval_rows": len(evals), "eval_loss": eval_loss, "base_eval_loss": base_eval,
            }, indent=2, default=list))
        tail = losses[-max(1, steps_per_epoch):]
        return Result(adapter_dir=adapter_dir, steps=step, trained_tokens=trained_tokens,
                      train_loss=sum(tail) / len(tail) if tail else None, eval_loss=eval_loss, base_eval_loss=base_eval,
                      resumed_from=resumed, stopped=stopped, checkpoints=checkpoints)

    def _order(self, n: int, epoch: int) -> list[int]:
        order = list(range(n))
        random.Random(self.train.seed * 1_000_003 + epoch).shuffle(order)
        return order

    @torch.no_grad()
    def evaluate(self, model: Any, rows: list[tuple[list[int], list[int]]], pad_id: int | None) -> float:
        """Mean loss per answer token over `rows`."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for i in range(0, len(rows), self.train.batch_size):
            input_ids, labels, mask = _pad(rows[i:i + self.train.batch_size], pad_id if pad_id is not None else 0)
            logits = model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device)).logits.float()
            shift_logits, shift_labels = logits[:, :-1], labels[:, 1:].to(self.device)
            loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                                     ignore_index=-100, reduction="sum")
            total += float(loss)
            count += int((shift_labels != -100).sum())
        if was_training:
            model.train()
        return total / max(1, count)


def _pad(batch: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):  # right-padded: positions count from 0 for every row
        input_ids[row, :len(ids)] = torch.tensor(ids)
        labels[row, :len(labs)] = torch.tensor(labs)
        mask[row, :len(ids)] = 1
    return input_ids, labels, mask


def merged_model(base: Any, adapter_dir: Path) -> Any:
    """The base with the adapter's weights merged in: served like any model."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).merge_and_unload()


@torch.no_grad()
def answers(model: Any, tokenizer: Any, prompts: list[Conversation], *, max_new_tokens: int = 48) -> list[str]:
    """Greedy answers, one conversation at a time (a gate's few dozen prompts)."""
    model.eval()
    out = []
    for messages in prompts:
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        encoded = {k: v.to(model.device) for k, v in encoded.items()}
        ids = model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        out.append(tokenizer.decode(ids[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True))
    return out


def pack_adapter(adapter_dir: Path) -> bytes:
    """An adapter directory as a tar archive (its files only, sorted, no owners or times), so the
    same adapter is the same bytes: one blob."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for file in sorted(p for p in Path(adapter_dir).iterdir() if p.is_file()):
            info = tarfile.TarInfo(file.name)
            info.size = file.stat().st_size
            with file.open("rb") as f:
                tar.addfile(info, f)
    return buffer.getvalue()


def unpack_adapter(blobs: Any, sha256: str, root: Path) -> Path:
    """The adapter stored as blob `sha256`, unpacked once under `root` (files only, no paths
    outside it); its directory."""
    import io
    import tarfile

    target = Path(root) / sha256
    if (target / "adapter_config.json").is_file():
        return target
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blobs.get(sha256)), mode="r") as tar:
        tar.extractall(tmp, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
