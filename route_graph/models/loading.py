"""``load_chat_model``: the chat model a spec string names, on the engine that runs it best.

Parsing the spec (``route_graph.models.spec``) says what the string points at; this module turns
that into a LangChain ``BaseChatModel``: an OpenAI-compatible server, a LangChain provider, or a
local model on the llama.cpp or transformers engine (with a LoRA adapter applied where the spec
names one). Engines load lazily, so importing this module needs neither torch nor llama.cpp.
"""

from __future__ import annotations

import os
import pathlib
from typing import TYPE_CHECKING, Any

from route_graph.errors import ModelError
from route_graph.models.cache import ensure_offline_gguf, ensure_offline_model
from route_graph.models.spec import (
    BACKENDS,
    DEFAULT_MODEL,
    HF_ID,
    ModelSpec,
    parse_model_spec,
)

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["choose_backend", "ensure_default_model", "load_chat_model"]


def ensure_default_model(name: str = DEFAULT_MODEL) -> pathlib.Path:
    """Assemble, verify and convert a packaged offline model once; return its HF directory.

    The first call takes one to two minutes (hashing and dequantizing the GGUF); later calls
    only check a marker file. Safe to call from several processes at once. (The llama.cpp
    engine needs no conversion: it runs ``ensure_offline_gguf(name)``.)
    """
    return ensure_offline_model(name)


def _local_dir(path: str | os.PathLike[str]) -> pathlib.Path:
    from route_graph.models.engines.transformers_chat import check_model_dir

    directory = pathlib.Path(path).expanduser()
    if not directory.is_dir() and HF_ID.match(str(path)) and not str(path).startswith((".", "~", "/")):
        raise ModelError(
            f"Model directory {str(directory)!r} does not exist. "
            f"If you meant a Hugging Face model id, write 'hf:{path}'."
        )
    return check_model_dir(directory)


def _hf_cached_dir(repo_id: str) -> pathlib.Path:
    """The snapshot of ``repo_id`` in the local HF cache; this package never downloads."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelError(
            "'hf:' specs need transformers and huggingface_hub: pip install 'route-graph[transformers]'"
        ) from exc
    try:
        folder = snapshot_download(repo_id, local_files_only=True)
    except Exception as exc:  # LocalEntryNotFoundError and friends
        raise ModelError(
            f"{repo_id!r} is not in the local Hugging Face cache, and route-graph never "
            "downloads models. On a machine with network access run "
            f"`huggingface-cli download {repo_id}` (set HF_HOME to share the cache), or save "
            "the model with save_pretrained() and pass that directory's path instead."
        ) from exc
    return _local_dir(folder)


def choose_backend(parsed: ModelSpec) -> str:
    """Which in-process engine runs a local spec: the spec's prefix, env, the file type, else speed.

    llama.cpp runs GGUF files only (the offline models are GGUFs); Hugging Face directories
    need transformers. For the offline models llama.cpp is chosen whenever it is installed:
    it is the fast engine on CPUs without AMX, the common case (benchmarks/HISTORY.md).
    """
    from route_graph.models.engines.llamacpp_chat import llamacpp_available

    choice = parsed.backend or os.environ.get("ROUTE_GRAPH_BACKEND", "").strip().lower() or None
    if choice is not None and choice not in BACKENDS:
        raise ModelError(f"Unknown engine {choice!r} (ROUTE_GRAPH_BACKEND): use one of {', '.join(BACKENDS)}.")
    is_gguf = parsed.kind == "path" and parsed.target.lower().endswith(".gguf")
    if parsed.kind == "hf" or (parsed.kind == "path" and not is_gguf):
        if choice == "llamacpp":
            raise ModelError(
                f"llama.cpp runs GGUF files; {parsed.target!r} is a Hugging Face model. Use the "
                "transformers engine (drop the 'llamacpp:' prefix / ROUTE_GRAPH_BACKEND) or a .gguf file."
            )
        return "transformers"
    if is_gguf:
        if choice == "transformers":
            raise ModelError(f"{parsed.target!r} is a GGUF file: the transformers engine loads model directories.")
        return "llamacpp"
    if choice is not None:
        return choice
    return "llamacpp" if llamacpp_available() else "transformers"


def _provider_model(parsed: ModelSpec, *, max_new_tokens: int, temperature: float, **kwargs: Any) -> BaseChatModel:
    """A hosted or local provider's chat model through LangChain's ``init_chat_model``."""
    try:
        from langchain.chat_models import init_chat_model
    except ImportError as exc:
        raise ModelError(
            f"'{parsed.target}:{parsed.model}' specs use LangChain's init_chat_model: pip install langchain and the "
            "provider's package (e.g. 'route-graph[openai]', 'route-graph[anthropic]', 'route-graph[ollama]')."
        ) from exc
    # Ollama reads the reply length as num_predict and silently ignores max_tokens.
    length = {"num_predict": max_new_tokens} if parsed.target == "ollama" else {"max_tokens": max_new_tokens}
    try:
        return init_chat_model(parsed.model, model_provider=parsed.target, temperature=temperature, **length, **kwargs)
    except ImportError as exc:
        raise ModelError(f"The {parsed.target} provider needs its LangChain package: {exc}") from exc
    except Exception as exc:  # a provider client refusing to start (no key, bad option)
        raise ModelError(
            f"Could not create the {parsed.target} model {parsed.model!r}: {type(exc).__name__}: {str(exc)[:300]}. "
            "Set the provider's API key (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY) or check the model name."
        ) from exc


def load_chat_model(
    spec: str | None = None,
    *,
    max_new_tokens: int = 384,
    temperature: float = 0.0,
    **kwargs: Any,
) -> BaseChatModel:
    """Build the chat model a spec string names (see ``SPEC_FORMS``).

    Extra keyword arguments go to the engine's chat model (:class:`LlamaCppChatModel`:
    ``n_ctx``, ``prefix_cache_mb``, ``num_threads``; :class:`TransformersChatModel`:
    ``max_batch_size``, ``dtype``, ``num_threads``) or to ``ChatOpenAI`` (e.g. ``timeout``).
    Local weights load lazily, once per process, on the first call.
    """
    parsed = parse_model_spec(spec)
    common = {"max_new_tokens": max_new_tokens, "temperature": temperature}
    if parsed.kind == "openai":
        try:
            from langchain_openai import ChatOpenAI
        except ImportError as exc:
            raise ModelError(
                "OpenAI-compatible servers need langchain-openai: "
                "pip install 'route-graph[openai]'"
            ) from exc
        return ChatOpenAI(
            base_url=parsed.target,
            model=parsed.model,
            api_key=os.environ.get("OPENAI_API_KEY") or "EMPTY",
            temperature=temperature,
            max_tokens=max_new_tokens,
            **kwargs,
        )
    if parsed.kind == "provider":
        return _provider_model(parsed, max_new_tokens=max_new_tokens, temperature=temperature, **kwargs)
    backend = choose_backend(parsed)
    if backend != "llamacpp" and parsed.adapter_scale != 1.0:
        raise ModelError(
            f"An adapter scale ('@{parsed.adapter_scale:g}') is applied by the llama.cpp engine only; drop the "
            "'transformers:' prefix, or merge the adapter at full strength."
        )
    if parsed.packaged is not None:  # a broken install fails here, saying so, not deep in an engine
        from route_graph.models.packaged import packaged_adapter_dir

        packaged_adapter_dir(parsed.packaged)
    if parsed.adapter is not None:  # report the tuned model by its name or as BASE+ADAPTER, not as its base
        kwargs.setdefault("model_name", parsed.packaged or f"{parsed.target}+{pathlib.Path(parsed.adapter).name}")
    if backend == "llamacpp":
        from route_graph.models.engines.llamacpp_chat import LlamaCppChatModel

        if parsed.kind == "offline":
            path = ensure_offline_gguf(parsed.target)
            kwargs.setdefault("model_name", parsed.target)
        else:
            path = pathlib.Path(parsed.target).expanduser()
        if parsed.adapter is not None:
            from route_graph.models.adapters import lora_gguf

            if not path.is_file():
                raise ModelError(f"GGUF model file {str(path)!r} does not exist.")
            kwargs.setdefault("lora_path", str(lora_gguf(parsed.adapter, path)))
            kwargs.setdefault("lora_scale", parsed.adapter_scale)
        return LlamaCppChatModel(model_path=str(path), **common, **kwargs)

    from route_graph.models.engines.transformers_chat import (
        TransformersChatModel,
        batching_pays,
    )

    if parsed.kind == "offline":
        directory = ensure_default_model(parsed.target)
        kwargs.setdefault("model_name", parsed.target)
    elif parsed.kind == "hf":
        directory = _hf_cached_dir(parsed.target)
        kwargs.setdefault("model_name", parsed.target)
    else:
        directory = _local_dir(parsed.target)
    if parsed.adapter is not None:
        from route_graph.models.adapters import merged_model_dir

        directory = merged_model_dir(parsed.adapter, directory)
    if not batching_pays(kwargs.get("dtype", "auto")):
        kwargs.setdefault("max_batch_size", 1)
    return TransformersChatModel(model_path=str(directory), **common, **kwargs)
