"""Text runtime: loads any Hugging Face causal LM directory from local disk.

Nothing here knows about queues or HTTP; the worker drives `DecodeBatch.step`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from genloom.config import RuntimeSettings
from genloom.config.settings import Device, DType
from genloom.runtimes.constrain import Constrainer
from genloom.runtimes.multi_lora import MultiLora
from genloom.runtimes.text_batch import DecodeBatch
from genloom.runtimes.weights import touch_weights


class PromptError(ValueError):
    """The prompt cannot be run on this model (too long, empty, or no chat template)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    created: int  # when the checkpoint was written (config.json's modification time)
    max_context: int
    parameters: int
    dtype: str
    device: str


def _declared_context(path: Path) -> int | None:
    """`max_context` from the model directory's genloom.json, when it has one (the built-in model
    says there that it was trained on 256-token windows, although its positions go to 1024)."""
    try:
        return int(json.loads((path / "genloom.json").read_text())["max_context"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path / 'genloom.json'}: max_context must be a number: {e}") from e


def pick_device(device: Device) -> torch.device:
    if device is Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device.value)


def _pick_dtype(dtype: DType, device: torch.device) -> torch.dtype:
    if dtype is DType.AUTO:
        # Half-precision matmuls are slow or unsupported on many CPUs; on GPUs they are the point.
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return getattr(torch, dtype.value)


class TextRuntime:
    def __init__(
        self, *, name: str, path: Path, settings: RuntimeSettings, load_weights: bool = True, max_context: int | None = None,
        adapter: Path | None = None,
    ) -> None:
        """Without `load_weights`, only the tokenizer and config are read: enough to check and
        tokenize requests (an API replica), not to generate (`model` is None). `max_context`: the
        context the model really handles (prompt and output), when it is less than its config's
        `max_position_embeddings`; a model's own `genloom.json` may say it too."""
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a server log is not a terminal

        self.name = name
        self.path = path
        self.adapter = adapter
        self._constrainer: Constrainer | None = None
        device = pick_device(settings.device)
        dtype = _pick_dtype(settings.dtype, device)
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = None
        self._adapters: MultiLora | None = None
        if load_weights:
            self.model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=dtype, attn_implementation="sdpa"
            ).to(device)
            if adapter is not None:  # a LoRA adapter's weights merged in: it then serves like any model
                from genloom.runtimes.lora import merged_model

                self.model = merged_model(self.model, adapter)
            self.model.eval()
            touch_weights(self.model)
            model_config = self.model.config
            parameters = sum(p.numel() for p in self.model.parameters())
        else:
            from genloom.runtimes.weights import count_parameters

            model_config = AutoConfig.from_pretrained(path, local_files_only=True)
            parameters = count_parameters(path)
        self.device = device
        config = model_config.get_text_config()
        positions = int(getattr(config, "max_position_embeddings", 2048))
        declared = max_context or _declared_context(path)
        if declared is not None and declared > positions:
            raise ValueError(f"max_context {declared} for model {name} is more than its max_position_embeddings ({positions})")
        self.max_context = declared or positions
        self.vocab_size = int(getattr(config, "vocab_size", 0) or len(self.tokenizer))
        self.eos_token_ids = self._eos_ids(GenerationConfig, path, model_config)
        self.info = ModelInfo(
            name=name,
            path=path,
            created=int((path / "config.json").stat().st_mtime),
            max_context=self.max_context,
            parameters=parameters,
            dtype=str(dtype).removeprefix("torch."),
            device=str(device) if load_weights else "none (API replica)",
        )

    def _eos_ids(self, generation_config_cls, path: Path, model_config) -> set[int]:
        ids: set[int] = set()
        try:
            gen = generation_config_cls.from_pretrained(path, local_files_only=True)
            eos = gen.eos_token_id
        except OSError:
            eos = model_config.eos_token_id
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        return ids

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_completion(self, prompt: str) -> list[int]:
        ids = self.tokenizer.encode(prompt, add_special_tokens=True)
        return self._checked(ids)

    @property
    def takes_tools(self) -> bool:
        """Whether the chat template renders `tools` itself (else the gateway writes them into the messages)."""
        return bool(self.has_chat_template and "tools" in str(self.tokenizer.chat_template))

    def encode_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[int]:
        if not self.has_chat_template:
            raise PromptError(f"model {self.name} has no chat template; use /v1/completions with a plain prompt")
        ids = self.tokenizer.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        if hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        return self._checked(list(ids))

    def _checked(self, ids: list[int]) -> list[int]:
        if not ids:
            raise PromptError("the prompt is empty")
        if len(ids) >= self.max_context:
            raise PromptError(
                f"the prompt has {len(ids)} tokens; model {self.name} takes at most {self.max_context - 1}"
            )
        return ids

    @property
    def adapters(self) -> MultiLora:
        """LoRA adapters of this model that its batches' rows may name (fine-tuned versions served
        in its batch); hooks go on its layers with the first adapter added."""
        if self.model is None:
            raise RuntimeError(f"model {self.name} was loaded without its weights and takes no adapters")
        if self._adapters is None:
            self._adapters = MultiLora(self.model)
        return self._adapters

    def new_batch(self) -> DecodeBatch:
        if self.model is None:
            raise RuntimeError(f"model {self.name} was loaded without its weights and cannot generate")
        return DecodeBatch(
            model=self.model,
            tokenizer=self.tokenizer,
            eos_token_ids=self.eos_token_ids,
            max_context=self.max_context,
            device=self.device,
            constrainer=self.constrainer,
            adapters=self.adapters,
        )

    def constrainer(self) -> Constrainer:
        """The grammar machinery for this model, made on first use (a response_format request)."""
        if self._constrainer is None:
            self._constrainer = Constrainer(self.tokenizer, vocab_size=self.vocab_size, eos_token_ids=self.eos_token_ids)
        return self._constrainer
