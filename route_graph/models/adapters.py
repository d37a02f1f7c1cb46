"""LoRA adapters on the local models: the ROUTE-tuned model is a base model plus an adapter.

A spec ``BASE+ADAPTER`` (``route_graph.models.spec``) runs a PEFT LoRA adapter directory (what
``finetune`` writes) on top of a base model, on either in-process engine:

- **llama.cpp** applies the adapter at run time to the quantized base GGUF (``Llama(lora_path=)``),
  so the tuned model costs what the base costs. The adapter is converted once to a LoRA GGUF in
  the model cache. Hand-written because llama.cpp's ``convert_lora_to_gguf.py`` ships in no
  installable package (only in its source tree); the tensor names come from the ``gguf``
  package's own name map, and the output was checked tensor by tensor against that script
  (0 differing values on the v2 MSFT checkpoint).
- **transformers** loads a merged copy, made once in the model cache (merged in fp32, saved in
  bf16), because merging at every load costs ~10 s on 2 cores.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
from typing import Any

from route_graph.errors import ModelError

__all__ = ["adapter_config", "adapter_key", "lora_gguf", "merge_adapter", "merged_model_dir"]

_WEIGHTS = "adapter_model.safetensors"
_CONFIG = "adapter_config.json"


def adapter_config(adapter_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The PEFT config of ``adapter_dir``: a LoRA adapter saved with safetensors, or a ModelError."""
    directory = pathlib.Path(adapter_dir).expanduser()
    path = directory / _CONFIG
    if not path.is_file():
        raise ModelError(
            f"{str(directory)!r} is not a LoRA adapter directory (no {_CONFIG}). Point at the "
            "folder training wrote (e.g. outputs/NAME/train/adapter or a checkpoint-N folder)."
        )
    if not (directory / _WEIGHTS).is_file():
        raise ModelError(f"{str(directory)!r} has no {_WEIGHTS}: save the adapter with safetensors.")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelError(f"{str(path)!r} is not valid JSON: {exc}") from exc
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise ModelError(f"{str(directory)!r} is a {config.get('peft_type')} adapter; only LoRA adapters run here.")
    return config


def _check_llamacpp(config: dict[str, Any], directory: pathlib.Path) -> None:
    unsupported = [
        name for name in ("use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "modules_to_save")
        if config.get(name)
    ]
    if unsupported:
        raise ModelError(
            f"The adapter in {str(directory)!r} uses {', '.join(unsupported)}, which llama.cpp does not "
            "apply the way peft does. Merge it instead (route-finetune export) and load the merged folder."
        )


def adapter_key(adapter_dir: str | os.PathLike[str], *extra: str) -> str:
    """A short hash of the adapter's files (plus ``extra`` strings): its cache folder name."""
    digest = hashlib.sha256()
    directory = pathlib.Path(adapter_dir).expanduser()
    for name in (_CONFIG, _WEIGHTS):
        with open(directory / name, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    for text in extra:
        digest.update(text.encode())
    return digest.hexdigest()[:16]


def gguf_architecture(base_gguf: str | os.PathLike[str]) -> tuple[str, int]:
    """A GGUF model's architecture name and block (layer) count, read from its header only."""
    import gguf

    reader = gguf.GGUFReader(str(base_gguf))
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ModelError(f"{str(base_gguf)!r} names no architecture (general.architecture); is it a GGUF model?")
    arch = field.contents()
    blocks = reader.fields.get(f"{arch}.block_count")
    return arch, int(blocks.contents()) if blocks is not None else 256


def _write_lora_gguf(adapter_dir: pathlib.Path, config: dict[str, Any], base_gguf: pathlib.Path, out: pathlib.Path) -> None:
    try:
        import gguf
        import numpy as np
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ModelError(
            f"Converting a LoRA adapter for llama.cpp needs gguf, safetensors and torch ({exc.name} is "
            "missing): pip install 'route-graph[transformers]'."
        ) from exc

    arch, blocks = gguf_architecture(base_gguf)
    known = {value: key for key, value in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in known:
        raise ModelError(f"The gguf package does not know the architecture {arch!r} of {str(base_gguf)!r}.")
    names = gguf.get_tensor_name_map(known[arch], blocks)
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config.get("lora_alpha", config.get("r", 8))))
    tensors = load_file(str(adapter_dir / _WEIGHTS))
    for key in sorted(tensors):
        module, _, part = key.removeprefix("base_model.model.").rpartition(".lora_")
        if part not in ("A.weight", "B.weight"):
            raise ModelError(f"Unexpected tensor {key!r} in {str(adapter_dir)!r}: only LoRA A/B weights are supported.")
        target = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if target is None:
            raise ModelError(f"llama.cpp has no tensor for {module!r} ({arch}); this adapter cannot run on llama.cpp.")
        data = tensors[key].float().numpy().astype(np.float16)
        writer.add_tensor(f"{target}.lora_{part[0].lower()}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def lora_gguf(adapter_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str]) -> pathlib.Path:
    """The adapter as a LoRA GGUF for llama.cpp (f16, like llama.cpp's converter), made once."""
    from route_graph._cache import file_lock, model_cache_dir

    directory = pathlib.Path(adapter_dir).expanduser().resolve()
    config = adapter_config(directory)
    _check_llamacpp(config, directory)
    base = pathlib.Path(base_gguf).expanduser()
    folder = model_cache_dir() / "adapters" / adapter_key(directory, "gguf", str(base.resolve()))
    out = folder / "adapter.gguf"
    if out.is_file():
        return out
    with file_lock(folder / ".lock"):
        if not out.is_file():
            tmp = folder / "adapter.gguf.tmp"
            _write_lora_gguf(directory, config, base, tmp)
            os.replace(tmp, out)
    return out


def merge_adapter(
    adapter_dir: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    base_model: str | None = None,
    dtype: str = "bfloat16",
) -> pathlib.Path:
    """Merge ``adapter_dir`` into its base model and save a standalone model to ``output_dir``.

    ``base_model`` defaults to the path recorded in the adapter's config.
    """
    try:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:
        raise ModelError(
            f"Merging a LoRA adapter needs torch, transformers and peft ({exc.name} is missing): "
            "pip install 'route-graph[finetune]', or run the adapter on llama.cpp with a GGUF base."
        ) from exc

    config = adapter_config(adapter_dir)
    base = base_model or config.get("base_model_name_or_path")
    if not base:
        raise ModelError(f"{adapter_dir} does not name its base model; pass base_model.")
    try:
        torch_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    except KeyError:
        raise ModelError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}.") from None
    # Merge in float32 (exact), then cast: merging in bf16 rounds the sum twice.
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    model = model.to(torch_dtype)
    model.config.use_cache = True
    out = pathlib.Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer_source = adapter_dir if (pathlib.Path(adapter_dir) / "tokenizer_config.json").is_file() else base
    AutoTokenizer.from_pretrained(tokenizer_source).save_pretrained(out)
    try:
        GenerationConfig.from_pretrained(base).save_pretrained(out)
    except OSError:
        pass  # the base has none; transformers derives one from the model config
    (out / "route-finetune.json").write_text(
        json.dumps({"base_model": str(base), "adapter": str(pathlib.Path(adapter_dir).resolve()), "dtype": dtype}, indent=2),
        encoding="utf-8",
    )
    return out


def merged_model_dir(adapter_dir: str | os.PathLike[str], base_dir: str | os.PathLike[str]) -> pathlib.Path:
    """``base_dir`` with the adapter merged in, as a model directory in the cache, made once."""
    from route_graph._cache import file_lock, model_cache_dir

    directory = pathlib.Path(adapter_dir).expanduser().resolve()
    adapter_config(directory)
    base = pathlib.Path(base_dir).expanduser().resolve()
    folder = model_cache_dir() / "adapters" / adapter_key(directory, "merged", str(base))
    out = folder / "merged"
    if (out / "route-finetune.json").is_file():
        return out
    with file_lock(folder / ".lock"):
        if not (out / "route-finetune.json").is_file():
            tmp = folder / "merged.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            merge_adapter(directory, tmp, base_model=str(base))
            shutil.rmtree(out, ignore_errors=True)
            os.replace(tmp, out)
    return out
