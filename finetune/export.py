"""Export: merge a LoRA adapter into a standalone model directory, or check an adapter for vLLM.

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

__all__ = ["VLLM_MAX_LORA_RANK", "check_adapter", "merge_adapter"]

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


def merge_adapter(
    adapter_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    dtype: str = "bfloat16",
) -> Path:
    """Merge ``adapter_dir`` into its base model and save a standalone model to ``output_dir``.

    ``base_model`` defaults to the path recorded in the adapter's config.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    config = check_adapter(adapter_dir, max_rank=10**6)
    base = base_model or config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir} does not name its base model; pass base_model.")
    try:
        torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    except KeyError:
        raise ConfigError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}.") from None
    # Merge in float32 (exact), then cast: merging in bf16 rounds the sum twice.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model = model.to(torch_dtype)
    model.config.use_cache = True
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer_source = adapter_dir if (Path(adapter_dir) / "tokenizer_config.json").is_file() else base
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(out)
    try:
        GenerationConfig.from_pretrained(base).save_pretrained(out)
    except OSError:
        pass  # the base has none; transformers derives one from the model config
    (out / "route-finetune.json").write_text(
        json.dumps({"base_model": str(base), "adapter": str(Path(adapter_dir).resolve()), "dtype": dtype}, indent=2),
        encoding="utf-8",
    )
    return out
