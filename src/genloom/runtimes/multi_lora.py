"""Many LoRA adapters of one base in one forward pass: each row of a batch names its adapter (or
none), and every adapted linear layer adds `scale * (x @ A.T) @ B.T` with that row's adapter's A
and B. The base's weights are never changed, so base-only rows compute exactly what the base
computes.

A forward pass costs the same few operations per layer however many adapters its rows name.
While the adapters' columns (adapters x largest rank) are at most DENSE_COLUMNS, every row is
multiplied by all adapters' A side by side, masked to its own adapter's columns, and multiplied
by the Bs (two plain matmuls: the CPU's best, measured against the alternative); beyond, the
adapters are stacked per layer (slot 0 all zeros, for base rows; ranks padded to the largest) and
each row's A and B gathered by its slot into two batched matmuls (the gather-then-matmul shape of
Punica's BGMV kernels, in plain torch). When every row names the same adapter, it is two plain
matmuls.

The batcher (`DecodeBatch`) sets each step's rows with `MultiLora.rows(...)`; the server attaches
fine-tuned versions to their base's worker (`worker.adapter_worker.AdapterWorker`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

_SUFFIXES = (".lora_A.weight", ".lora_B.weight")
# Up to this many adapter columns (adapters x rank), every row is multiplied by every adapter's A
# and masked (two plain matmuls); beyond, each row's A and B are gathered (batched matmuls).
DENSE_COLUMNS = 256


class UnsupportedAdapter(ValueError):
    """An adapter that MultiLora would not apply exactly as PEFT's merge does (serve a merged copy)."""


@dataclass(frozen=True)
class LoraWeights:
    """One adapter: per adapted module (its name in the base model) its A (r x in) and B (out x r)."""

    modules: dict[str, tuple[torch.Tensor, torch.Tensor]]
    scale: float

    @classmethod
    def load(cls, adapter_dir: Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> LoraWeights:
        """A PEFT adapter directory (adapter_config.json, adapter_model.safetensors) of plain LoRA
        on linear layers; anything else (DoRA, per-module ranks or alphas, biases, extra trained
        modules, LoRA on embeddings, a .bin file) is UnsupportedAdapter: its merged copy serves it."""
        from safetensors.torch import load_file

        adapter_dir = Path(adapter_dir)
        config = json.loads((adapter_dir / "adapter_config.json").read_text())
        unsupported = [name for name, present in (
            ("use_dora", config.get("use_dora")), ("rank_pattern", config.get("rank_pattern")),
            ("alpha_pattern", config.get("alpha_pattern")), ("modules_to_save", config.get("modules_to_save")),
            ("bias", config.get("bias", "none") not in (None, "none")),
        ) if present]
        if unsupported:
            raise UnsupportedAdapter(f"{adapter_dir}: {', '.join(unsupported)} is not applied per row")
        if not (adapter_dir / "adapter_model.safetensors").is_file():
            raise UnsupportedAdapter(f"{adapter_dir} has no adapter_model.safetensors")
        tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
        pairs: dict[str, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            for i, suffix in enumerate(_SUFFIXES):
                if key.endswith(suffix):
                    module = key[: -len(suffix)].removeprefix("base_model.model.")
                    pairs.setdefault(module, {})["AB"[i]] = value.to(device=device, dtype=dtype)
                    break
            else:
                raise UnsupportedAdapter(f"{adapter_dir}: {key} is not a linear layer's LoRA weight")
        modules = {name: (ab["A"], ab["B"]) for name, ab in pairs.items() if "A" in ab and "B" in ab}
        if not modules or len(modules) != len(pairs):
            raise UnsupportedAdapter(f"{adapter_dir} holds no complete LoRA A/B pairs")
        rank, alpha = float(config["r"]), float(config.get("lora_alpha", config["r"]))
        scale = alpha / rank ** 0.5 if config.get("use_rslora") else alpha / rank
        return cls(modules=modules, scale=scale)


class _Wrapped:
    """A linear layer whose forward adds the adapters' deltas: replaced on the instance, which
    costs less per call than a forward hook (the module call keeps its fast path); `remove` puts
    the class's forward back."""

    def __init__(self, layer: torch.nn.Module, add: Any) -> None:
        self._layer = layer
        base = layer.forward

        def forward(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            return add(layer, (x,), base(x, *args, **kwargs))

        layer.forward = forward

    def remove(self) -> None:
        del self._layer.forward


@dataclass(frozen=True)
class _Plan:
    """One forward pass's rows: each row's slot in the stacks, or the one slot every row uses."""

    rows: int
    index: torch.Tensor | None  # [rows] slots (gather); None when `single` is set
    single: int | None
    mask: torch.Tensor | None = None  # [rows, adapters * rank]: 1 on each row's own adapter's columns (dense)


class MultiLora:
    """Adapters of one base model, applied per row by wrapping the forward of its adapted linear layers."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._named = dict(model.named_modules())
        self._adapters: dict[str, LoraWeights] = {}
        self._hooks: dict[str, Any] = {}
        self._slots: dict[str, int] = {}  # adapter → its slot in the stacks (0: the base alone)
        # Per adapted layer: A.T stacked [slots, in, r] and scale * B.T stacked [slots, r, out], and
        # the same side by side: [in, adapters * r] and [adapters * r, out]; None: to be built.
        self._stacks: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._wide: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._rank = 0
        self._like = torch.zeros(0)  # a tensor of the adapters' dtype and device
        self._plan: _Plan | None = None  # this forward's rows
        self._last: tuple[tuple[int, ...], _Plan] | None = None  # the last plan made, by its rows' slots

    @property
    def names(self) -> list[str]:
        return sorted(self._adapters)

    def add(self, name: str, weights: LoraWeights) -> None:
        """Attach an adapter (checked against the base's layers here, so a bad one never reaches a batch)."""
        for module, (a, b) in weights.modules.items():
            layer = self._named.get(module)
            if not isinstance(layer, torch.nn.Linear):
                raise ValueError(f"adapter {name}: the base has no linear layer {module!r}")
            if a.dim() != 2 or b.dim() != 2 or a.shape[1] != layer.in_features or b.shape[0] != layer.out_features \
                    or a.shape[0] != b.shape[1]:
                raise ValueError(f"adapter {name}: {module} has A {tuple(a.shape)} and B {tuple(b.shape)}, which do not "
                                 f"fit a {layer.in_features} -> {layer.out_features} layer")
        self._adapters[name] = weights
        for module in weights.modules:
            if module not in self._hooks:
                self._hooks[module] = _Wrapped(self._named[module], self._hook(module))
        self._rebuild()

    def remove(self, name: str) -> None:
        self._adapters.pop(name, None)
        still = {m for w in self._adapters.values() for m in w.modules}
        for module in [m for m in self._hooks if m not in still]:
            self._hooks.pop(module).remove()
        self._rebuild()

    def _rebuild(self) -> None:
        self._last, self._wide = None, {}
        self._stacks = self._build() if self._adapters else {}

    def _build(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The adapters' weights per adapted layer, slot i+1 for the i-th adapter by name, in the one
        form the mixed batches will use: stacked (gather) or, up to DENSE_COLUMNS, side by side
        (`_wide`, every layer padded to the largest rank so one row mask fits all); B scaled."""
        names = self.names
        self._slots = {name: i + 1 for i, name in enumerate(names)}
        self._rank = max(a.shape[0] for w in self._adapters.values() for a, _ in w.modules.values())
        dense = len(names) * self._rank <= DENSE_COLUMNS
        stacks, self._wide = {}, {}
        for module in self._hooks:
            pairs = {name: self._adapters[name].modules[module] for name in names if module in self._adapters[name].modules}
            some_a, some_b = next(iter(pairs.values()))
            self._like = some_a
            rank = self._rank if dense else max(a.shape[0] for a, _ in pairs.values())
            a_t = some_a.new_zeros((len(names) + 1, some_a.shape[1], rank))
            b_t = some_b.new_zeros((len(names) + 1, rank, some_b.shape[0]))
            for name, (a, b) in pairs.items():
                slot, r = self._slots[name], a.shape[0]
                a_t[slot, :, :r] = a.T
                b_t[slot, :r, :] = b.T * self._adapters[name].scale
            if dense:  # [in, adapters * rank] and [adapters * rank, out]
                self._wide[module] = (a_t[1:].permute(1, 0, 2).reshape(a_t.shape[1], -1).contiguous(),
                                      b_t[1:].reshape(-1, b_t.shape[2]).contiguous())
            else:
                stacks[module] = (a_t, b_t)
        return stacks

    @contextmanager
    def rows(self, adapters: list[str | None]) -> Iterator[None]:
        """Forward passes inside use `adapters[i]` for row i (None: the base alone)."""
        unknown = {a for a in adapters if a is not None} - set(self._adapters)
        if unknown:
            raise KeyError(f"adapters not loaded: {sorted(unknown)}")
        if self._stacks is None:
            self._rebuild()
        slots = tuple(0 if name is None else self._slots[name] for name in adapters)
        if any(slots):
            # A running batch names the same adapters step after step: its plan is made once.
            if self._last is None or self._last[0] != slots:
                self._last = (slots, self._make_plan(slots))
            self._plan = self._last[1]
        try:
            yield
        finally:
            self._plan = None

    def _make_plan(self, slots: tuple[int, ...]) -> _Plan:
        like = self._like
        if len(set(slots)) == 1:
            return _Plan(rows=len(slots), index=None, single=slots[0])
        index = torch.tensor(slots, device=like.device)
        if not self._wide:
            return _Plan(rows=len(slots), index=index, single=None)
        # Row i keeps the columns of its own adapter (none for a base row).
        own = torch.nn.functional.one_hot(index, len(self._adapters) + 1)[:, 1:].to(like.dtype)
        return _Plan(rows=len(slots), index=None, single=None, mask=own.repeat_interleave(self._rank, dim=1))

    def _hook(self, module: str):
        def add_deltas(layer: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            plan = self._plan
            if plan is None:
                return output
            x = inputs[0]
            if x.shape[0] != plan.rows:
                raise ValueError(f"{plan.rows} rows named, the batch has {x.shape[0]}")
            if self._wide:
                a_wide, b_wide = self._wide[module]
                x2, out2 = x.reshape(-1, x.shape[-1]), output.view(-1, output.shape[-1])  # a row per token
                if plan.single is not None:  # one adapter on every row: its own columns
                    cols = slice((plan.single - 1) * self._rank, plan.single * self._rank)
                    out2.addmm_(x2 @ a_wide[:, cols], b_wide[cols])
                    return output
                # Every adapter's columns for every row, then each row keeps its own.
                mask = plan.mask if x.dim() == 2 else plan.mask.repeat_interleave(x.shape[1], dim=0)
                out2.addmm_((x2 @ a_wide).mul_(mask), b_wide)
                return output
            assert self._stacks is not None
            a_t, b_t = self._stacks[module]
            if plan.single is not None:
                return output + (x @ a_t[plan.single]) @ b_t[plan.single]
            x3 = x.reshape(x.shape[0], -1, x.shape[-1])  # [rows, tokens, in]
            delta = torch.bmm(torch.bmm(x3, a_t.index_select(0, plan.index)), b_t.index_select(0, plan.index))
            return output + delta.view(output.shape)

        return add_deltas
