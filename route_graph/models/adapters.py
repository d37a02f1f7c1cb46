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

Converting needs torch (bf16 weights), which the light ``[local]`` install lacks. So an adapter
folder may carry its conversion: ``adapter.gguf`` plus ``adapter_gguf.json`` recording the
sha256 of the base GGUF it was made for and the key of the adapter files it was made from
(``write_adapter_gguf``; ``route-finetune ship`` for a packaged model). llama.cpp runs it as it is
when both still match, and converts as above otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
from typing import Any

from route_graph.errors import ModelError

__all__ = [
    "PREBUILT_GGUF",
    "PREBUILT_RECORD",
    "adapter_config",
    "adapter_key",
    "gguf_sha256",
    "lora_gguf",
    "merge_adapter",
    "merged_model_dir",
    "prebuilt_lora_gguf",
    "write_adapter_gguf",
]

log = logging.getLogger(__name__)

_WEIGHTS = "adapter_model.safetensors"
_CONFIG = "adapter_config.json"
# An adapter folder's own LoRA GGUF, and what it was converted from (see the module docstring).
PREBUILT_GGUF = "adapter.gguf"
PREBUILT_RECORD = "adapter_gguf.json"
_PREBUILT_FORMAT = 1


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


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def gguf_sha256(path: str | os.PathLike[str]) -> str:
    """A GGUF file's sha256: an offline model's from its verification marker (a stat), any other file hashed."""
    from route_graph.models.cache import verified_gguf_sha256

    file = pathlib.Path(path).expanduser()
    return verified_gguf_sha256(file) or _sha256(file)


def _prebuilt(directory: pathlib.Path, base: pathlib.Path) -> tuple[pathlib.Path | None, str]:
    """The folder's adapter.gguf if made from these adapter files for this base, else (None, why not)."""
    out, record_path = directory / PREBUILT_GGUF, directory / PREBUILT_RECORD
    if not out.is_file():
        return None, ""
    if not base.is_file():
        return None, f"the base GGUF {str(base)!r} does not exist"
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"{PREBUILT_GGUF} in {str(directory)!r} has no readable {PREBUILT_RECORD}"
    if record.get("format") != _PREBUILT_FORMAT:
        return None, f"{record_path} is in format {record.get('format')!r}, not {_PREBUILT_FORMAT}"
    # Cheapest checks first: a base of another size is another base, whatever its hash.
    if record.get("base_size") != base.stat().st_size or record.get("base_sha256") != gguf_sha256(base):
        return None, f"{PREBUILT_GGUF} in {str(directory)!r} was made for another base ({record.get('base')!r}), not {str(base)!r}"
    if record.get("adapter_key") != adapter_key(directory):
        return None, f"{PREBUILT_GGUF} in {str(directory)!r} was made from other adapter files (rewrite it: route-finetune ship)"
    if record.get("sha256") != _sha256(out):
        return None, f"{PREBUILT_GGUF} in {str(directory)!r} is corrupt (its sha256 differs from {PREBUILT_RECORD}'s)"
    return out, ""


def prebuilt_lora_gguf(adapter_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str]) -> pathlib.Path | None:
    """The adapter folder's own ``adapter.gguf`` when it still matches its files and ``base_gguf``, else None."""
    return _prebuilt(pathlib.Path(adapter_dir).expanduser().resolve(), pathlib.Path(base_gguf).expanduser())[0]


def lora_gguf(adapter_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str]) -> pathlib.Path:
    """The adapter as a LoRA GGUF for llama.cpp (f16, like llama.cpp's converter): the folder's own
    prebuilt one when it matches this base, else converted once into the model cache."""
    from route_graph._cache import file_lock, model_cache_dir

    directory = pathlib.Path(adapter_dir).expanduser().resolve()
    config = adapter_config(directory)
    _check_llamacpp(config, directory)
    base = pathlib.Path(base_gguf).expanduser()
    prebuilt, why_not = _prebuilt(directory, base)
    if prebuilt is not None:
        return prebuilt
    if why_not:
        log.info("Not using the prebuilt LoRA GGUF: %s; converting the adapter instead.", why_not)
    folder = model_cache_dir() / "adapters" / adapter_key(directory, "gguf", str(base.resolve()))
    out = folder / "adapter.gguf"
    if out.is_file():
        return out
    with file_lock(folder / ".lock"):
        if not out.is_file():
            tmp = folder / "adapter.gguf.tmp"
            try:
                _write_lora_gguf(directory, config, base, tmp)
            except ModelError as exc:
                if why_not:  # say why the shipped conversion did not serve
                    raise ModelError(f"{exc} (Converting because {why_not}.)") from exc
                raise
            os.replace(tmp, out)
    return out


def write_adapter_gguf(
    adapter_dir: str | os.PathLike[str], base_gguf: str | os.PathLike[str], *, base_name: str | None = None
) -> pathlib.Path:
    """Write ``adapter.gguf`` and ``adapter_gguf.json`` into the adapter folder, for ``base_gguf``.

    llama.cpp then runs the adapter on that base with no conversion, so no torch at load time:
    how a packaged adapter ships. ``base_name`` (e.g. an offline model's name) labels the base
    in the record; the base is identified by its sha256.
    """
    directory = pathlib.Path(adapter_dir).expanduser().resolve()
    config = adapter_config(directory)
    _check_llamacpp(config, directory)
    base = pathlib.Path(base_gguf).expanduser()
    if not base.is_file():
        raise ModelError(f"Base GGUF {str(base)!r} does not exist; pass an offline model's GGUF or a .gguf file.")
    out, tmp = directory / PREBUILT_GGUF, directory / (PREBUILT_GGUF + ".tmp")
    try:
        _write_lora_gguf(directory, config, base, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    record = {
        "format": _PREBUILT_FORMAT,
        "base": base_name or base.name,
        "base_sha256": gguf_sha256(base),
        "base_size": base.stat().st_size,
        "adapter_key": adapter_key(directory),
        "sha256": _sha256(out),
    }
    (directory / PREBUILT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
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
