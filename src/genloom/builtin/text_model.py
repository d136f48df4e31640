"""genloom-text-mini: a small Llama trained on the documentation every Python install ships.

Read top to bottom: config, corpus, tokenizer, data windows, evaluation, training, export.
The result is a plain Hugging Face checkpoint; the text runtime loads it like any other.
"""

from __future__ import annotations

import ast
import json
import math
import os
import random
import sys
import sysconfig
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MODEL_NAME = "genloom-text-mini"
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass
class TextModelConfig:
    seed: int = 1234
    vocab_size: int = 4096
    hidden_size: int = 256
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 768
    context: int = 256
    batch_size: int = 16
    steps: int = 900
    learning_rate: float = 3e-3
    warmup_steps: int = 60
    weight_decay: float = 0.1
    checkpoint_every: int = 100
    eval_windows: int = 200
    threads: int = 2


# --- corpus -------------------------------------------------------------------------------


def _stdlib_docstrings() -> list[tuple[str, str]]:
    """(qualified name, docstring) for modules, classes and functions of the standard library.

    Parsed with ast rather than imported, so building the corpus runs no library code."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out: list[tuple[str, str]] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in {"site-packages", "test", "idlelib", "lib2to3", "tkinter"} or "tests" in rel.parts:
            continue
        module = ".".join(rel.with_suffix("").parts).removesuffix(".__init__")
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        nodes: list[tuple[str, ast.AST]] = [(module, tree)]
        for node in ast.walk(tree):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                nodes.append((f"{module}.{node.name}", node))
        for name, node in nodes:
            doc = ast.get_docstring(node)
            if doc and len(doc) >= 40:
                out.append((name, doc.strip()))
    return out


def build_corpus() -> list[str]:
    """Every document formatted as one chat turn, so the model learns the chat template too."""
    from pydoc_data.topics import topics

    def turn(question: str, answer: str) -> str:
        return f"<|user|>\n{question}<|end|>\n<|assistant|>\n{answer}<|end|>\n"

    docs = [turn(f"Explain the Python topic '{key}'.", text.strip()) for key, text in sorted(topics.items())]
    docs += [turn(f"What does {name} do?", doc) for name, doc in _stdlib_docstrings()]
    return docs


def split_corpus(docs: list[str]) -> tuple[list[str], list[str]]:
    """Every 20th document is held out; the split depends only on corpus order."""
    train = [d for i, d in enumerate(docs) if i % 20 != 0]
    held_out = [d for i, d in enumerate(docs) if i % 20 == 0]
    return train, held_out


# --- tokenizer ----------------------------------------------------------------------------


def train_tokenizer(docs: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|system|>", "<|user|>", "<|assistant|>", "<|eos|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def encode_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    ids: list[int] = []
    for doc in docs:
        ids.extend(tokenizer.encode(doc, add_special_tokens=False))
    return torch.tensor(ids, dtype=torch.long)


# --- evaluation ---------------------------------------------------------------------------


def unigram_perplexity(train_ids: torch.Tensor, held_out_ids: torch.Tensor, vocab_size: int) -> float:
    """Add-one smoothed unigram model fitted on the training split: the baseline to beat."""
    counts = torch.bincount(train_ids, minlength=vocab_size).double() + 1.0
    log_probs = torch.log(counts / counts.sum())
    return math.exp(-log_probs[held_out_ids].mean().item())


def _next_token_loss(model, windows: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=windows[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))


@torch.no_grad()
def model_perplexity(model, held_out_ids: torch.Tensor, context: int, max_windows: int) -> float:
    """Perplexity over non-overlapping windows of the held-out stream (the same tokens the
    unigram baseline is scored on, less the first token of each window)."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    n_windows = min(max_windows, (len(held_out_ids) - 1) // context)
    for w in range(n_windows):
        chunk = held_out_ids[w * context : (w + 1) * context + 1]
        total_nll += _next_token_loss(model, chunk.unsqueeze(0)).item() * context
        total_tokens += context
    model.train()
    return math.exp(total_nll / total_tokens)


# --- model and training -------------------------------------------------------------------


def build_model(cfg: TextModelConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def _lr_at(step: int, cfg: TextModelConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.learning_rate * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.learning_rate * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(cfg: TextModelConfig, work_dir: Path, out_dir: Path, console=None, docs: list[str] | None = None) -> dict:
    """Train (resuming from work_dir/checkpoint.pt when present) and export to out_dir.

    `docs` replaces the corpus (tests train on a few documents)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    work_dir.mkdir(parents=True, exist_ok=True)
    train_docs, held_out_docs = split_corpus(docs if docs is not None else build_corpus())

    tok_dir = work_dir / "tokenizer"
    if tok_dir.exists():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:
        tokenizer = train_tokenizer(train_docs, cfg.vocab_size)
        tokenizer.save_pretrained(tok_dir)
    train_ids = encode_stream(tokenizer, train_docs)
    held_out_ids = encode_stream(tokenizer, held_out_docs)

    model = build_model(cfg, tokenizer)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
        betas=(0.9, 0.95),
    )
    start_step = 0
    checkpoint_path = work_dir / "checkpoint.pt"
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = state["step"]
    # The window sampler is seeded per step, so a resumed run draws the same batches as an uninterrupted one.
    model.train()
    started = time.monotonic()
    with Progress(
        TextColumn("[bold]train text[/]"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]}"),
        TimeRemainingColumn(), console=console,
    ) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=start_step, loss="-")
        for step in range(start_step, cfg.steps):
            rng = random.Random(cfg.seed * 1_000_003 + step)
            starts = [rng.randrange(0, len(train_ids) - cfg.context - 1) for _ in range(cfg.batch_size)]
            batch = torch.stack([train_ids[s : s + cfg.context + 1] for s in starts])
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(step, cfg)
            loss = _next_token_loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            progress.update(task, advance=1, loss=f"{loss.item():.3f}")
            if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                tmp = checkpoint_path.with_suffix(".tmp")
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step + 1}, tmp)
                os.replace(tmp, checkpoint_path)

    metrics = {
        "held_out_perplexity": round(model_perplexity(model, held_out_ids, cfg.context, cfg.eval_windows), 2),
        "unigram_perplexity": round(unigram_perplexity(train_ids, held_out_ids, len(tokenizer)), 2),
        "train_tokens": len(train_ids),
        "held_out_tokens": len(held_out_ids),
        "parameters": sum(p.numel() for p in model.parameters()),
        "python": sys.version.split()[0],
        "train_seconds_this_run": round(time.monotonic() - started, 1),
        "config": asdict(cfg),
    }
    export(model, tokenizer, out_dir, metrics)
    return metrics


def export(model, tokenizer, out_dir: Path, metrics: dict) -> None:
    """Write a standard HF checkpoint: float16 weights keep the shipped file small."""
    from transformers import GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.to(torch.float16)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.convert_tokens_to_ids("<|end|>"), tokenizer.convert_tokens_to_ids("<|eos|>")],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if not metrics.get("random"):  # a trained model handles the windows it was trained on, not its config's positions
        (out_dir / "genloom.json").write_text(json.dumps({"max_context": metrics["config"]["context"]}) + "\n")


def save_random_model(out_dir: Path, cfg: TextModelConfig, max_context: int = 512, init_std: float = 0.02) -> Path:
    """An untrained model with the built-in's architecture and a tokenizer fitted on pydoc topics:
    what tests and benchmarks use when they need a real checkpoint but not a trained one."""
    from pydoc_data.topics import topics

    torch.manual_seed(cfg.seed)
    tokenizer = train_tokenizer([t for _, t in sorted(topics.items())], cfg.vocab_size)
    model = build_model(cfg, tokenizer)
    # A wider init than training uses gives untrained models varied, not repetitive, output.
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0.0, init_std)
    model.config.max_position_embeddings = max_context
    export(model.to(torch.float32), tokenizer, out_dir, {"random": True, "config": asdict(cfg)})
    return out_dir
