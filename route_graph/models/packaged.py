"""Packaged tuned models: a ROUTE-tuned LoRA adapter shipped as package data, run on an offline base.

The tuned model is the offline base (``route_graph.models.cache``) plus a small adapter, so it
ships as a few megabytes under ``route_graph/adapters_data/<folder>/`` (``adapter_config.json``,
``adapter_model.safetensors``, and for llama.cpp without torch a prebuilt ``adapter.gguf`` with
its ``adapter_gguf.json``; see ``route_graph.models.adapters``) instead of as new weights.
A packaged name is a spec (``route-sql --model NAME``); ``DEFAULT_SPEC`` says which model
``None``/``'default'`` means, so making a tuned model the default is one constant.

Shipping one (``route-finetune ship``, then one line each here)::

    PackagedModel("route-0.5b", base="qwen2.5-coder-0.5b", folder="route-0.5b", description="..."),
    DEFAULT_SPEC = "route-0.5b"

Spec parsing imports this module, so it reads no files: ``packaged_adapter_path`` only builds
a path; ``packaged_adapter_dir`` checks the files are there (at load time).
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from route_graph.errors import ModelError

__all__ = [
    "ADAPTERS_DATA",
    "DEFAULT_SPEC",
    "PACKAGED_MODELS",
    "PackagedModel",
    "packaged_adapter_dir",
    "packaged_adapter_path",
]

# The package-data folder (pyproject.toml [tool.setuptools.package-data] installs adapters_data/*/*).
ADAPTERS_DATA = pathlib.Path(__file__).parent.parent / "adapters_data"
# The files an installed adapter folder must hold (adapter.gguf is optional: without it llama.cpp
# converts the adapter once, which needs torch).
_REQUIRED = ("adapter_config.json", "adapter_model.safetensors")


@dataclass(frozen=True)
class PackagedModel:
    """A tuned model shipped with the package: an offline base plus an adapter folder."""

    name: str  # the spec that names it, e.g. 'route-0.5b' (lower case)
    base: str  # an offline model name (route_graph.models.cache.OFFLINE_MODELS)
    folder: str  # its folder under ADAPTERS_DATA
    description: str = ""  # what a reader calls it in reports, e.g. 'Qwen2.5-Coder-0.5B-Instruct + ROUTE MSFT'


# One line per shipped adapter; its folder's README.md is the model card (data, commands, measured EX).
PACKAGED_MODELS: dict[str, PackagedModel] = {
    model.name: model
    for model in (
        PackagedModel(
            "route-0.5b",
            base="qwen2.5-coder-0.5b",
            folder="route-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct + ROUTE MSFT LoRA (phase 3d)",
        ),
    )
}

# What None / '' / 'default' names: an offline model or a PACKAGED_MODELS name. The ROUTE-tuned
# 0.5B since phase 3d met issue 26's shipping bar (full MCP 70.0 vs 64.2, paired CI +1.8..+10.0, on
# the 400 standard questions); 'qwen2.5-coder-0.5b' still names the untuned base.
DEFAULT_SPEC = "route-0.5b"


def _lookup(name: str) -> PackagedModel:
    try:
        return PACKAGED_MODELS[name.strip().lower()]
    except KeyError:
        known = ", ".join(PACKAGED_MODELS) or "none in this version"
        raise ModelError(f"Unknown packaged model {name!r}; packaged models: {known}.") from None


def packaged_adapter_path(name: str) -> pathlib.Path:
    """Where the packaged model's adapter folder is installed (a path only: nothing is read)."""
    return ADAPTERS_DATA / _lookup(name).folder


def packaged_adapter_dir(name: str) -> pathlib.Path:
    """The packaged model's adapter folder, after checking its files are installed."""
    model = _lookup(name)
    directory = ADAPTERS_DATA / model.folder
    missing = [file for file in _REQUIRED if not (directory / file).is_file()]
    if missing:
        raise ModelError(
            f"The packaged model {model.name!r} is incomplete: {', '.join(missing)} missing in {str(directory)!r}. "
            "Reinstall route-graph (pip install --force-reinstall --no-deps route-graph); from a source checkout, "
            "restore the folder with git, or use the untuned base with --model "
            f"{model.base!r}."
        )
    return directory
