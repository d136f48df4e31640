"""Many LoRA adapters of one base in one forward pass: each row of a batch names its adapter (or
none), and every adapted linear layer adds, per adapter present, `scale * (x @ A.T) @ B.T` to
that adapter's rows only. The base's weights are never changed, so base-only rows compute exactly
what the base computes, and an adapter costs two thin matmuls over its own rows.

This is the building block for serving many fine-tuned versions from one continuous batch (the
learning-loop issue); the batcher sets each step's rows with `MultiLora.rows(...)`. Grouping by
adapter suits the CPU; a gather kernel (one matmul over all rows' adapters) is the GPU's way."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_SUFFIXES = (".lora_A.weight", ".lora_B.weight")


@dataclass(frozen=True)
class LoraWeights:
    """One adapter: per adapted module (its name in the base model) its A (r x in) and B (out x r)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float

    @classmethod
    def load(cls, adapter_dir: Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LoraWeights:
        """A PEFT adapter directory (adapter_config.json, adapter_model.safetensors)."""
        from safetensors.torch import load_file

        config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
        tensors = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            for i, suffix in enumerate(_SUFFIXES):
                if key.endswith(suffix):
                    module = key[: -len(suffix)].removeprefix("base_model.model.")
                    pairs.setdefault(module, {})["AB"[i]] = value.to(device=device, dtype=dtype)
        modules = {name: (ab["A"], ab["B"]) for name, ab in pairs.items() if "A" in ab and "B" in ab}
        if not modules:
            raise ValueError(f"{adapter_dir} holds no LoRA A/B weights")
        return cls(modules=modules, scale=float(config.get("lora_alpha", config.get("r", 1))) / float(config["r"]))


class MultiLora:
    """Adapters of one base model, applied per row through forward hooks on its linear layers."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._named = dict(model.named_modules())
        self._adapters: dict[str, LoraWeights] = {}
        self._hooks: dict[str, Any] = {}
        self._rows: list[str | None] | None = None  # this forward's adapter per row
        self._groups: list[tuple[LoraWeights, torch.Tensor]] = []  # per adapter present: its rows (worked out once)

    @property
    def names(self) -> list[str]:
        return sorted(self._adapters)

    def add(self, name: str, weights: LoraWeights) -> None:
        for module in weights.modules:
            if not isinstance(self._named.get(module), torch.nn.Linear):
                raise ValueError(f"adapter {name}: the base has no linear layer {module!r}")
        self._adapters[name] = weights
        for module in weights.modules:
            if module not in self._hooks:
                self._hooks[module] = self._named[module].register_forward_hook(self._hook(module))

    def remove(self, name: str) -> None:
        self._adapters.pop(name, None)
        still = {m for w in self._adapters.values() for m in w.modules}
        for module in [m for m in self._hooks if m not in still]:
            self._hooks.pop(module).remove()

    @contextmanager
    def rows(self, adapters: list[str | None]) -> Iterator[None]:
        """Forward passes inside use `adapters[i]` for row i (None: the base alone)."""
        unknown = {a for a in adapters if a is not None} - set(self._adapters)
        if unknown:
            raise KeyError(f"adapters not loaded: {sorted(unknown)}")
        self._rows = list(adapters)
        by_adapter: dict[str, list[int]] = {}
        for i, name in enumerate(adapters):
            if name is not None:
                by_adapter.setdefault(name, []).append(i)
        self._groups = [(self._adapters[name], torch.tensor(index)) for name, index in by_adapter.items()]
        try:
            yield
        finally:
            self._rows, self._groups = None, []

    def _hook(self, module: str):
        def add_deltas(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            if not self._groups:
                return output
            x = inputs[0]
            if self._rows is not None and x.shape[0] != len(self._rows):
                raise ValueError(f"{len(self._rows)} rows named, the batch has {x.shape[0]}")
            cloned = False
            for weights, at in self._groups:
                pair = weights.modules.get(module)
                if pair is None:
                    continue
                if not cloned:
                    output, cloned = output.clone(), True
                a, b = pair
                at = at.to(x.device)
                output.index_add_(0, at, ((x.index_select(0, at) @ a.T) @ b.T) * weights.scale)
            return output

        return add_deltas
