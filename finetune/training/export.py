"""Export: merge a LoRA adapter into a standalone model directory, or check an adapter for vLLM.

``merge_adapter`` lives in ``route_graph.models.adapters`` (the model factory merges adapters too).

The merged directory is a plain Hugging Face model (safetensors, config, tokenizer with its chat
template, generation config): ``route_graph.models.load_chat_model(path)`` loads it and
``vllm serve path`` serves it. Keeping the adapter instead works with ``vllm serve BASE
--enable-lora --lora-modules msft=ADAPTER`` as long as its rank is within vLLM's limit (16 by
default) and it has no ``modules_to_save`` (vLLM cannot load those); ``check_adapter`` says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from route_graph.errors import ConfigError, ModelError
from route_graph.models.adapters import adapter_config, merge_adapter

__all__ = ["VLLM_MAX_LORA_RANK", "check_adapter", "copy_adapter", "merge_adapter"]

VLLM_MAX_LORA_RANK = 16


def check_adapter(adapter_dir: str | os.PathLike[str], max_rank: int = VLLM_MAX_LORA_RANK) -> dict[str, Any]:
    """The adapter's config, after checking vLLM can serve it (rank, no ``modules_to_save``)."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ModelError(f"No LoRA adapter in {adapter_dir} (adapter_config.json is missing); run training first.")
    config = json.loads(path.read_text(encoding="utf-8"))
    rank = int(config.get("r", 0))
    if rank > max_rank:
        raise ConfigError(
            f"LoRA rank {rank} exceeds vLLM's default limit {max_rank}: start vLLM with "
            f"--max-lora-rank {rank}, or merge the adapter (route-finetune export --merge)."
        )
    if config.get("modules_to_save"):
        raise ConfigError(
            f"The adapter saves whole modules ({config['modules_to_save']}); vLLM cannot load such "
            "adapters. Merge it instead (route-finetune export --merge)."
        )
    return config


def copy_adapter(
    adapter_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    dtype: str = "bfloat16",
    base_model: str | None = None,
) -> Path:
    """A copy of the adapter with its weights cast to ``dtype`` (bf16 halves an fp32 CPU run's
    adapter) and, if given, ``base_model`` recorded as its base: what a model ships as package
    data and what ``vllm serve BASE --enable-lora --lora-modules NAME=DIR`` loads."""
    import torch
    from safetensors.torch import load_file, save_file

    config = adapter_config(adapter_dir)
    try:
        torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    except KeyError:
        raise ConfigError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}.") from None
    weights = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({name: tensor.to(torch_dtype).contiguous() for name, tensor in weights.items()},
              str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    if base_model:
        config["base_model_name_or_path"] = base_model
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out
