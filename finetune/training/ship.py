"""Shipping a tuned adapter with the package: one command puts it where ``pip install`` carries it.

A packaged tuned model (``route_graph.models.packaged``) is a folder under
``route_graph/adapters_data/``: the adapter's two files byte for byte (what was evaluated is what
ships), a README.md saying where it came from, and its LoRA GGUF prebuilt for the offline base,
because the light ``[local]`` install that runs it on llama.cpp has no torch to convert it.
``ship_adapter`` writes that folder; registering it is then one ``PACKAGED_MODELS`` line, and
making it the default one ``DEFAULT_SPEC`` constant (``next_steps`` prints both).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from finetune.training.phases import refuse_git_ignored
from route_graph.errors import ConfigError
from route_graph.models import packaged
from route_graph.models.adapters import (
    PREBUILT_GGUF,
    PREBUILT_RECORD,
    adapter_config,
    write_adapter_gguf,
)
from route_graph.models.cache import OFFLINE_MODELS, ensure_offline_gguf
from route_graph.models.spec import BACKENDS, DEFAULT_MODEL

__all__ = ["next_steps", "ship_adapter"]

_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_NAME = re.compile(r"^[a-z][a-z0-9._-]*$")


def _check_name(name: str) -> None:
    if not _NAME.match(name) or name == "default" or name in OFFLINE_MODELS or name in BACKENDS:
        raise ConfigError(
            f"{name!r} cannot name a packaged model: use lower-case letters, digits, '.', '-' and '_' (e.g. "
            f"'route-0.5b'), and not 'default', an engine or an offline model's name ({', '.join(OFFLINE_MODELS)})."
        )


def _readme(name: str, base: str, source: Path) -> str:
    where = source.relative_to(Path.cwd()) if source.is_relative_to(Path.cwd()) else source
    lines = [
        f"# {name}",
        "",
        (
            f"A ROUTE-tuned LoRA adapter on the offline base `{base}`, shipped with route-graph: "
            f"`route-sql ask --model {name}` / `load_chat_model({name!r})`."
        ),
        "",
        f"- `adapter_config.json`, `adapter_model.safetensors`: the adapter, byte for byte as in `{where.as_posix()}`.",
        (
            f"- `{PREBUILT_GGUF}`, `{PREBUILT_RECORD}`: its LoRA GGUF for llama.cpp, made for `{base}` (the sha256 "
            "of the base and of the adapter files is recorded), so the llama.cpp engine needs no torch to run it."
        ),
        "",
    ]
    phase = source / "PHASE.md"
    if phase.is_file():  # how it was trained, as the phase folder recorded it
        text = phase.read_text(encoding="utf-8").strip()
        lines += ["## How it was trained", "", re.sub(r"^#", "###", text, flags=re.MULTILINE), ""]
    return "\n".join(lines)


def ship_adapter(
    adapter_dir: str | os.PathLike[str],
    name: str,
    *,
    base: str = DEFAULT_MODEL,
    destination: str | os.PathLike[str] | None = None,
) -> Path:
    """Write the packaged folder of ``adapter_dir`` as ``name`` on the offline ``base``; return it.

    ``destination`` defaults to ``route_graph/adapters_data/<name>``. Needs gguf, safetensors and torch
    (``route-graph[transformers]``) once, here, so that installs running it never do.
    """
    _check_name(name)
    if base not in OFFLINE_MODELS:
        raise ConfigError(f"The base of a packaged model is an offline model ({', '.join(OFFLINE_MODELS)}), not {base!r}.")
    source = Path(adapter_dir).expanduser().resolve()
    adapter_config(source)  # a LoRA adapter saved with safetensors, or a ModelError saying what is wrong
    out = Path(destination).expanduser().resolve() if destination else packaged.ADAPTERS_DATA / name
    out.mkdir(parents=True, exist_ok=True)
    if out != source:
        for file in _ADAPTER_FILES:
            shutil.copyfile(source / file, out / file)
        (out / "README.md").write_text(_readme(name, base, source), encoding="utf-8")
    write_adapter_gguf(out, ensure_offline_gguf(base), base_name=base)
    for file in (*_ADAPTER_FILES, PREBUILT_GGUF, PREBUILT_RECORD):
        refuse_git_ignored(out / file)  # a file git skips would not reach the next install
    return out


def next_steps(name: str, base: str, folder: Path) -> dict[str, str]:
    """The two source lines that register the shipped folder and make it the default model."""
    steps = {
        "register": f'PackagedModel("{name}", base="{base}", folder="{folder.name}", description="..."),'
        "  # in PACKAGED_MODELS, route_graph/models/packaged.py",
        "make_default": f'DEFAULT_SPEC = "{name}"  # route_graph/models/packaged.py',
    }
    if folder.parent.resolve() != packaged.ADAPTERS_DATA.resolve():
        steps["note"] = f"{folder} is outside {packaged.ADAPTERS_DATA}: only folders there are installed as package data."
    return steps
