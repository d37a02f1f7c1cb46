"""How the graph asks its chat model: one named, tagged call, prefilled where the backend can
continue an answer, with JSON-schema output for the schema links where it has that.

A provider that rejects either feature is asked again without it, and never with it again (one
warning); any other backend failure the user can fix becomes one clear ``ModelError``. Each call
has its own run name (``MODEL_CALL_NAMES``) and the tags ``route_graph`` + its stage, so a
LangSmith trace tells the stages' calls apart, and all but the reply carry LangGraph's
``nostream`` tag. ``Meter`` counts what a node's calls cost, for its trace entry.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import merge_configs
from langgraph.constants import TAG_NOSTREAM

from route_graph import prompts
from route_graph.errors import RouteGraphError
from route_graph.graph.context import RouteConfig
from route_graph.model_capabilities import (
    bind_json_schema,
    continuing_model,
    model_failure_error,
    prefill_opening,
    rejects_request_feature,
)

__all__ = ["MODEL_CALL_NAMES", "RUN_TAG", "USER_FACING_CALLS", "Meter", "ModelCalls"]

#: Model calls whose tokens are the user's reply (streamed by ``stream_mode="messages"``); the
#: others carry LangGraph's ``nostream`` tag unless ``RouteConfig.stream_internal_calls``.
USER_FACING_CALLS: frozenset[str] = frozenset({"respond.answer"})
#: The LangChain run name of each model call (``stage.purpose``): a LangSmith trace tells apart the
#: two concurrent schema-linking calls, NC's verdict from its repair, and so on.
MODEL_CALL_NAMES: frozenset[str] = frozenset(
    {
        "schema_link.links",
        "schema_link.draft",
        "generate",
        "sample_generate",
        "noise_correct.verdict",
        "noise_correct.repair",
        "continue_write",
        "rescue.repair",
        "rewrite_question",
        "respond.answer",
    }
)
#: Tag on every model call the graph makes; each call is tagged with its stage (node) name too.
RUN_TAG = "route_graph"


class Meter:
    """Counts model calls, tokens and wall time of one node."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self._lock = threading.Lock()  # schema_link records its two concurrent calls
        self.calls = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def record(self, message: BaseMessage) -> str:
        usage = getattr(message, "usage_metadata", None) or {}
        with self._lock:
            self.calls += 1
            self.input_tokens += int(usage.get("input_tokens", 0) or 0)
            self.output_tokens += int(usage.get("output_tokens", 0) or 0)
        return prompts.answer_text(getattr(message, "content", None))  # None content: empty answer

    def cost(self) -> dict[str, Any]:
        return {
            "llm_calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "seconds": round(time.perf_counter() - self.start, 3),
        }


class ModelCalls:
    """The calls of one graph to one chat model; ``links_schema`` is the JSON schema of the links."""

    def __init__(self, llm: BaseChatModel, links_schema: dict[str, Any]) -> None:
        self.llm = llm
        self._sl_llm: Runnable = bind_json_schema(llm, "schema_links", links_schema)
        self._continuing: Runnable | None = continuing_model(llm)
        self._degrade_lock = threading.Lock()

    @property
    def linker(self) -> Runnable | None:
        """SL through JSON-schema constrained decoding where the backend supports it, else None."""
        return None if self._sl_llm is self.llm else self._sl_llm

    def ask(
        self,
        meter: Meter,
        messages: list[prompts.Message],
        prefill: str,
        cfg: RouteConfig,
        config: RunnableConfig,
        llm: Runnable | None = None,
        *,
        name: str,
        temperature: float | None = None,
    ) -> str:
        """One model call; the answer is prefilled where the backend can continue it.

        The call runs under the node's config (callbacks, tags, metadata kept) with its own run
        name (one of ``MODEL_CALL_NAMES``) and tags ``route_graph`` + its stage, so traces can
        tell the stages' calls apart. ``temperature`` (self-consistency samples only) goes to the
        model as a call argument, which LangChain passes on to the backend: the in-process
        engines and OpenAI-compatible servers read it; without it the model's own setting holds.
        """
        tags = [RUN_TAG, name.split(".", 1)[0]]
        if name not in USER_FACING_CALLS and not cfg.stream_internal_calls:
            tags.append(TAG_NOSTREAM)  # stream_mode="messages" streams the reply, not links and drafts
        config = merge_configs(config, {"run_name": name, "tags": tags})
        options: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
        continuing = self._continuing if llm is None and prefill and cfg.answer_prefill else None
        if llm is not None and llm is self._sl_llm and not cfg.constrained_json:
            llm = None
        try:
            if continuing is not None:
                prefill = prefill_opening(self.llm, prefill)
                reply = continuing.invoke([*messages, {"role": "assistant", "content": prefill}], config, **options)
                return prompts.join_prefill(prefill, meter.record(reply))
            return meter.record((llm or self.llm).invoke(messages, config, **options))
        except RouteGraphError:
            raise
        except Exception as exc:
            feature = "answer prefill" if continuing is not None else "JSON-schema output" if llm is self._sl_llm else None
            if feature is not None and rejects_request_feature(exc):
                self._degrade(feature, exc)  # the provider refused the field: once, then plain prompts
                return self.ask(meter, messages, prefill, cfg, config, None, name=name, temperature=temperature)
            error = model_failure_error(exc)
            if error is None:
                raise
            raise error from exc  # the user's to fix: say how

    def _degrade(self, feature: str, exc: BaseException) -> None:
        """Stop using ``feature`` with this model after its provider rejected it; warn once."""
        with self._degrade_lock:
            if feature == "answer prefill":
                if self._continuing is None:
                    return
                self._continuing = None
            else:
                if self._sl_llm is self.llm:
                    return
                self._sl_llm = self.llm
        warnings.warn(
            f"The model's provider rejected route-graph's {feature} ({type(exc).__name__}: {str(exc)[:200]}); "
            f"continuing without it. Set RouteConfig({'answer_prefill' if feature == 'answer prefill' else 'constrained_json'}=False) "
            "to skip the failed first try.",
            RuntimeWarning,
            stacklevel=2,
        )
