"""What the graph may ask of a chat model: answer prefill, JSON schemas, which failures are the user's.

The graph talks to any LangChain ``BaseChatModel``. A few backend features change how a stage
asks (continuing a prefilled answer, JSON-schema constrained decoding) and which failures are the
user's to fix (context length, a server that is down). This module answers those questions
without importing an engine (torch, transformers, llama.cpp): engines announce what they can do
through class attributes, OpenAI-compatible servers are recognised by their LangChain class.

It sits below the graph, not in ``route_graph.models``: the graph degrades a provider's features
with it and must never import how our own models are loaded (spec strings, weights, engines:
``route_graph.models``). It imports nothing of route_graph but its errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from route_graph.errors import ModelError, PromptTooLongError

if TYPE_CHECKING:  # annotations only: the module stays import-light
    from langchain_core.runnables import Runnable

__all__ = [
    "ModelCapabilities",
    "bind_json_schema",
    "continuing_model",
    "is_openai_compatible",
    "model_capabilities",
    "model_failure_error",
    "model_failure_message",
    "prefill_opening",
    "rejects_request_feature",
]


@dataclass(frozen=True)
class ModelCapabilities:
    """What a chat model's provider accepts beyond plain chat messages.

    ``prefill``: how a prefilled answer opening is continued -- ``"engine"`` (in-process engines
    continue a final assistant message), ``"vllm"`` (vLLM's ``continue_final_message`` request
    fields; llama-cpp-python's server ignores them and answers in a new turn, which
    ``prompts.join_prefill`` accepts), ``"assistant_turn"`` (the
    provider continues a final assistant message by itself, e.g. Anthropic), or None.
    ``json_schema``: how JSON-schema constrained output is asked for -- ``"response_format"``
    (OpenAI and compatible servers), ``"ollama_format"`` (Ollama's ``format``), or None.
    """

    provider: str
    prefill: Literal["engine", "vllm", "assistant_turn"] | None = None
    json_schema: Literal["response_format", "ollama_format"] | None = None


# Hosts of hosted OpenAI-protocol APIs that reject vLLM's extra request fields with HTTP 400.
_HOSTED_OPENAI = ("api.openai.com", ".openai.azure.com", ".azure.com")


def _class_names(model: Any) -> set[str]:
    """Names along the model's class hierarchy: providers are recognised without importing them."""
    return {cls.__name__ for cls in type(model).__mro__}


def _hosted_openai(model: Any, names: set[str]) -> bool:
    if "AzureChatOpenAI" in names:
        return True
    base = getattr(model, "openai_api_base", None) or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
    host = re.sub(r"^\w+://", "", str(base)).split("/", 1)[0].split(":", 1)[0].lower()
    return any(host == h.lstrip(".") or host.endswith(h) for h in _HOSTED_OPENAI)


def model_capabilities(llm: Runnable) -> ModelCapabilities:
    """What ``llm``'s provider accepts, decided per provider and endpoint (no network, no import).

    In-process engines announce themselves with a ``continues_final_message`` class attribute;
    LangChain's OpenAI classes are a vLLM/llama.cpp server unless they point at OpenAI or Azure
    (which accept ``response_format`` but reject vLLM's fields); ChatOllama takes a JSON schema
    through ``format``; ChatAnthropic continues a final assistant turn; anything else gets plain
    prompts. A provider that still rejects a field is degraded at its first call (the graph warns
    once and retries plainly), and ``RouteConfig.answer_prefill`` / ``constrained_json`` turn
    either feature off by hand.
    """
    model = getattr(llm, "bound", llm)
    if getattr(type(model), "continues_final_message", False):
        return ModelCapabilities("in-process engine", prefill="engine")
    names = _class_names(model)
    if "BaseChatOpenAI" in names:
        if _hosted_openai(model, names):
            return ModelCapabilities("OpenAI API", json_schema="response_format")
        return ModelCapabilities("OpenAI-compatible server", prefill="vllm", json_schema="response_format")
    if "ChatOllama" in names:
        return ModelCapabilities("Ollama", json_schema="ollama_format")
    if "ChatAnthropic" in names:
        return ModelCapabilities("Anthropic", prefill="assistant_turn")
    return ModelCapabilities(type(model).__name__)


def bind_json_schema(llm: Runnable, name: str, schema: dict[str, Any]) -> Runnable:
    """``llm`` asked for JSON matching ``schema`` where its provider supports it; else ``llm``.

    vLLM honours ``response_format`` (its older ``guided_json`` is silently ignored), so a
    server-backed model cannot return malformed JSON. Models without such output are returned
    unchanged; callers must still parse leniently.
    """
    kind = model_capabilities(llm).json_schema
    if kind == "response_format":
        return llm.bind(response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}})
    if kind == "ollama_format":
        return llm.bind(format=schema)
    return llm


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
    """What to do about a failed model call the user must fix, else None.

    Context length, a server that does not answer, and every provider API error (credentials,
    unknown model, rate limit, provider outage, rejected request: by HTTP status) get advice.
    Other failures return None and propagate as they are: one question's hiccup is the caller's
    to record (the evaluation runner does), not a reason to stop.
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
    elif (advice := _provider_advice(exc)) is None:
        return None
    return f"The model call failed ({text[:300]}); {advice}"


def _provider_advice(exc: BaseException) -> str | None:
    """What to do about a provider's HTTP error (by its status code), or None for other exceptions.

    Only errors that carry an HTTP status: a client-side failure such as a JSON answer cut at the
    length limit (``openai.LengthFinishReasonError``) stays the caller's to handle.
    """
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if not isinstance(status, int) or status < 400:
        return None
    if status in (401, 403):
        return "the provider refused the credentials: set the API key (e.g. OPENAI_API_KEY, ANTHROPIC_API_KEY) or check its permissions."
    if status == 404:
        return "the provider does not know this model or URL: check the model name and the base URL."
    if status == 429:
        return "the provider's rate limit or quota was hit: wait, lower the concurrency, or check the account's quota."
    if status >= 500:
        return "the provider failed on its side: try again later."
    if status in (400, 422):
        return ("the provider rejected the request: if it names a field, set RouteConfig(answer_prefill=False) or "
                "RouteConfig(constrained_json=False), or use a model that accepts it.")
    return f"the provider answered HTTP {status}: check the provider's status, the model name and the credentials."


def continuing_model(llm: Runnable) -> Runnable | None:
    """``llm`` set up to continue a final assistant message (answer prefill), or None if unknown.

    Prefilling the answer's opening (e.g. a ```sql fence) makes small models answer at once
    instead of explaining first, which is most of their decoding time. Which providers can, and
    how, is :func:`model_capabilities`' ``prefill``.
    """
    kind = model_capabilities(llm).prefill
    if kind in ("engine", "assistant_turn"):
        return llm
    if kind == "vllm":
        return llm.bind(extra_body={"continue_final_message": True, "add_generation_prompt": False})
    return None


def prefill_opening(llm: Runnable, prefill: str) -> str:
    """``prefill`` as ``llm``'s provider takes it in a final assistant turn: Anthropic refuses a
    prefilled turn that ends in whitespace, so it gets the opening without it."""
    return prefill.rstrip() if model_capabilities(llm).prefill == "assistant_turn" else prefill


_UNSUPPORTED = re.compile(
    r"unrecognized request argument|unsupported (parameter|argument|value|field)|(argument|parameter|field)s? (is |are )?not supported"
    r"|not supported (with|for|by) this model|unknown (field|parameter|argument)|extra_forbidden"
    r"|extra (inputs|fields) (are )?not permitted|unexpected keyword|trailing whitespace|invalid_request_error.*(response_format|json_schema)"
    r"|final assistant|assistant message prefill",
    re.IGNORECASE,
)
# A request-body validation error that names the field (pydantic's ``'loc': ('body', 'response_format', ...)``).
# llama-cpp-python's server answers ``response_format: json_schema`` with it under HTTP 500.
_BODY_FIELD_REFUSED = re.compile(r"validation error.*\(\s*'body',\s*'(response_format|messages|extra_body)'", re.DOTALL)


def rejects_request_feature(exc: BaseException) -> bool:
    """True when a provider refused a request field or a prefilled turn (HTTP 400/422; 500 with a
    body validation error naming the field, as llama-cpp-python's server answers), not the prompt.

    The graph then drops that feature (prefill or JSON-schema output) for the model, warns once
    and asks again plainly, instead of failing the user's first question.
    """
    status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    text = f"{type(exc).__name__}: {exc}"
    if status in (None, 400, 422, 500) and _BODY_FIELD_REFUSED.search(text):
        return True
    if status not in (None, 400, 422):
        return False
    return bool(_UNSUPPORTED.search(text))


def is_openai_compatible(llm: Runnable) -> bool:
    """True for LangChain's OpenAI chat models (vLLM, llama.cpp's server and friends)."""
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:
        return False
    return isinstance(getattr(llm, "bound", llm), BaseChatOpenAI)
