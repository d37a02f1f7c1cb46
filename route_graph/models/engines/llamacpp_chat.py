"""The llama.cpp engine: the shipped GGUF as it is (4-5 bit weights), fast on CPUs without AMX.

Measured on 2 AVX2-only cores (AMD EPYC, benchmarks/HISTORY.md): the transformers engine must
dequantize the Q4_K_M default model to fp32 (bf16 is unusable there) and decodes ~6 tokens/s;
llama.cpp reads the quantized weights directly. The engine also reuses the KV cache of the
longest shared prompt prefix: ROUTE's schema linking, draft, noise correction and the next
question on the same database all start with the same system + schema text, so only the part
after it is prefilled again. A bounded LRU of saved prefix states extends that across databases.

One ``llama_cpp.Llama`` per (file, settings) and process; calls are serialized by a lock
(batching does not pay on these CPUs, see benchmarks/HISTORY.md).
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import pathlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from route_graph.errors import ModelError, PromptTooLongError
from route_graph.models.engines.chat_common import (
    answer_is_complete,
    available_cpus,
    conversation,
    cut_at_stop,
)

__all__ = ["LlamaCppChatModel", "PrefixStats", "llamacpp_available", "rebuild_hint", "render_chat"]

log = logging.getLogger(__name__)

_CONTINUE_TAG = "<<route-graph:continue>>"


def llamacpp_available() -> bool:
    """True when llama-cpp-python is installed (it compiles at install; see README)."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


#: The flags scripts/llama_cpp_cmake_args.py needs before it turns GGML_AVX512 on.
_AVX512_FLAGS = frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})


def rebuild_hint(system_info: str, cpuinfo: str, version: str = "") -> str | None:
    """What to run when this CPU has AVX-512 but the installed llama.cpp build has no AVX-512 kernels.

    A build made with the README's earlier fixed AVX2 flags (or reused from pip's wheel cache)
    takes 11.4 s instead of 7.75 s per full MCP question on an AVX-512 Xeon (benchmarks/HISTORY.md,
    eighth session).
    """
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    if not _AVX512_FLAGS <= flags or "AVX512 = 1" in system_info:
        return None
    package = f"llama-cpp-python=={version}" if version else "llama-cpp-python"
    return (
        "llama-cpp-python was built without the AVX-512 kernels this CPU has (measured: a full MCP "
        "question ~1.5x slower). Rebuild it for this CPU from the route-graph checkout: "
        f"export CMAKE_ARGS=\"$(python scripts/llama_cpp_cmake_args.py)\" && "
        f"pip install --no-cache-dir --force-reinstall --no-deps {package}"
    )


def _warn_if_rebuild_pays() -> None:
    import llama_cpp

    with contextlib.suppress(OSError, AttributeError):
        info = llama_cpp.llama_print_system_info().decode()
        hint = rebuild_hint(info, pathlib.Path("/proc/cpuinfo").read_text(), getattr(llama_cpp, "__version__", ""))
        if hint:
            log.warning(hint)


def render_chat(template: str, messages: Sequence[dict[str, str]], special: dict[str, str] | None = None) -> str:
    """Render ``messages`` with a Hugging Face chat template, exactly as transformers does.

    A final assistant message is an answer prefill: the text ends inside it (transformers'
    ``continue_final_message``), else the assistant header is added for the reply. Same jinja
    settings and the same tag-and-cut rule as transformers, so both engines see one prompt text.
    """
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise ModelError(f"The model's chat template refused the messages: {message}")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    chat = [dict(m) for m in messages]
    prefilled = bool(chat) and chat[-1]["role"] == "assistant"
    if prefilled:
        chat[-1]["content"] = chat[-1]["content"] + _CONTINUE_TAG
    text = env.from_string(template).render(
        messages=chat, add_generation_prompt=not prefilled, **(special or {})
    )
    if prefilled:
        text = text[: text.rindex(_CONTINUE_TAG)]
    return text


@dataclass
class PrefixStats:
    """How much prompt prefill the KV-cache reuse saved (for benchmarks and the README)."""

    calls: int = 0
    prompt_tokens: int = 0
    reused_tokens: int = 0  # prompt tokens whose KV came from the context or the LRU
    lru_hits: int = 0
    output_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        hit = self.reused_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "reused_tokens": self.reused_tokens,
            "prefix_hit_rate": round(hit, 4),
            "lru_hits": self.lru_hits,
            "output_tokens": self.output_tokens,
            "prefill_seconds": round(self.prefill_seconds, 3),
            "decode_seconds": round(self.decode_seconds, 3),
        }


@dataclass
class _Saved:
    tokens: tuple[int, ...]
    state: bytes


@dataclass
class _Output:
    text: str
    input_tokens: int
    reused_tokens: int
    output_tokens: int
    finish_reason: str
    seconds: float


@dataclass
class _PrefixLRU:
    """Saved KV states of earlier prompts, least recently used dropped first, bytes bounded.

    The context itself already holds the last prompt; this keeps the prefixes of other
    databases' prompts so that alternating between databases does not prefill schemas again.
    """

    capacity_bytes: int
    entries: collections.OrderedDict[tuple[int, ...], _Saved] = field(default_factory=collections.OrderedDict)
    size: int = 0

    def best(self, tokens: Sequence[int]) -> tuple[_Saved | None, int]:
        """The saved state sharing the longest prefix with ``tokens``, and that length."""
        best, best_len = None, 0
        for key, saved in self.entries.items():
            n = _common_prefix(key, tokens)
            if n > best_len:
                best, best_len = saved, n
        if best is not None:
            self.entries.move_to_end(best.tokens)
        return best, best_len

    def put(self, tokens: tuple[int, ...], state: bytes) -> None:
        if len(state) > self.capacity_bytes:
            return
        old = self.entries.pop(tokens, None)
        if old is not None:
            self.size -= len(old.state)
        self.entries[tokens] = _Saved(tokens, state)
        self.size += len(state)
        while self.size > self.capacity_bytes and self.entries:
            _, dropped = self.entries.popitem(last=False)
            self.size -= len(dropped.state)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class _LlamaEngine:
    """One loaded GGUF, its chat template, the prefix LRU and the lock that serializes calls."""

    def __init__(
        self, path: str, n_ctx: int, n_threads: int, n_batch: int, cache_bytes: int, lora_path: str | None,
        lora_scale: float = 1.0,
    ):
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelError(
                "The llama.cpp engine needs llama-cpp-python: pip install 'route-graph[local]' "
                "(it compiles llama.cpp, ~5-15 min on 2 cores; see README for the build flags), "
                "or choose the transformers engine with a 'transformers:' spec."
            ) from exc
        started = time.perf_counter()
        try:
            quiet = contextlib.nullcontext()
            if lora_path:  # llama.cpp logs a line per adapted tensor while loading an adapter
                with contextlib.suppress(ImportError, AttributeError):
                    from llama_cpp._utils import suppress_stdout_stderr

                    quiet = suppress_stdout_stderr(disable=False)
            with quiet:
                self.llm = Llama(
                    model_path=path,
                    n_ctx=n_ctx,
                    n_batch=n_batch,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    lora_path=lora_path,
                    lora_scale=lora_scale,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            what = f"{path!r} with the LoRA adapter {lora_path!r}" if lora_path else repr(path)
            raise ModelError(
                f"llama.cpp could not load {what}: {exc}. Is it a GGUF model file"
                + (" and an adapter trained on it?" if lora_path else "?")
            ) from exc
        self.load_seconds = time.perf_counter() - started
        _warn_if_rebuild_pays()
        meta = self.llm.metadata
        self.template = meta.get("tokenizer.chat_template")
        if not self.template:
            from route_graph.models.cache import QWEN_CHATML_TEMPLATE

            self.template = QWEN_CHATML_TEMPLATE
        self.eos = {int(self.llm.token_eos())}
        for name in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            ids = self.llm.tokenize(name.encode(), add_bos=False, special=True)
            if len(ids) == 1:
                self.eos.add(int(ids[0]))
        self.path = path
        self.n_ctx = n_ctx
        self.lock = threading.Lock()
        self.stats = PrefixStats()
        self.lru = _PrefixLRU(cache_bytes)

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        return render_chat(self.template, messages)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def _restore_best_prefix(self, tokens: Sequence[int]) -> int:
        """Load the LRU state sharing more prefix than the live context does; the reusable length."""
        in_context = _common_prefix(self.llm.input_ids[: self.llm.n_tokens].tolist(), tokens)
        saved, saved_len = self.lru.best(tokens)
        if saved is None or saved_len <= in_context:
            return in_context
        import ctypes

        import llama_cpp

        buffer = (ctypes.c_uint8 * len(saved.state)).from_buffer_copy(saved.state)
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, buffer, len(saved.state)) != len(saved.state):
            self.llm.reset()
            return 0
        self.llm.input_ids[: len(saved.tokens)] = saved.tokens
        self.llm.n_tokens = len(saved.tokens)
        self.llm._requires_eval = True
        self.stats.lru_hits += 1
        return saved_len

    def _save_prefix(self, prompt: Sequence[int]) -> None:
        """Save the context's KV state (prompt part) for other databases' turns to come back to."""
        if self.lru.capacity_bytes <= 0:
            return
        import ctypes

        import llama_cpp

        key = tuple(prompt)
        if key in self.lru.entries:
            self.lru.entries.move_to_end(key)
            return
        size = llama_cpp.llama_state_get_size(self.llm._ctx.ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_get_data(self.llm._ctx.ctx, buffer, size)
        self.lru.put(key, bytes(buffer[:written]))

    def generate(
        self,
        prompt: str,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        stop: Sequence[str],
        stop_after_answer: bool,
        answer_prefix: str,
        seed: int | None,
        on_text: Any = None,
    ) -> _Output:
        """Greedy (or sampled) continuation of ``prompt`` with ROUTE's stop rules."""
        tokens = self.tokenize(prompt)
        if len(tokens) + 1 >= self.n_ctx:
            raise PromptTooLongError(
                f"The prompt has {len(tokens)} tokens, more than the model's context of {self.n_ctx} "
                "(exceed context window): lower RouteConfig.schema_token_budget or the sample rows, "
                "or load the model with a larger n_ctx."
            )
        budget = min(max_new_tokens, self.n_ctx - len(tokens) - 1)
        with self.lock:
            started = time.perf_counter()
            reused = self._restore_best_prefix(tokens)
            if seed is not None:
                self.llm.set_seed(seed)
            sampling = {"temp": temperature, "top_p": top_p, "top_k": 0, "min_p": 0.0} if temperature > 0 else {"temp": 0.0}
            out_ids: list[int] = []
            pending = b""
            text = ""
            reason = "length"
            first_token_at = None
            for token in self.llm.generate(tokens, reset=True, repeat_penalty=1.0, **sampling):
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    if len(tokens) > reused + 64:  # the new part of this prompt, for the next call
                        self._save_prefix(tokens)
                if token in self.eos:
                    reason = "stop"
                    break
                out_ids.append(token)
                pending += self.llm.detokenize([token], prev_tokens=None, special=False)
                try:
                    piece = pending.decode("utf-8")
                except UnicodeDecodeError:  # a multi-byte character split across tokens
                    if len(out_ids) >= budget:
                        break
                    continue
                pending = b""
                text += piece
                if on_text is not None:
                    on_text(piece)
                if stop and any(s in text[-(len(piece) + max(len(s) for s in stop)) :] for s in stop):
                    reason = "stop"
                    break
                if stop_after_answer and ("`" in piece or "}" in piece) and answer_is_complete(answer_prefix + text):
                    reason = "stop"
                    break
                if len(out_ids) >= budget:
                    break
            ended = time.perf_counter()
            first_token_at = first_token_at or ended
            self.stats.calls += 1
            self.stats.prompt_tokens += len(tokens)
            self.stats.reused_tokens += min(reused, len(tokens))
            self.stats.output_tokens += len(out_ids)
            self.stats.prefill_seconds += first_token_at - started
            self.stats.decode_seconds += ended - first_token_at
        return _Output(
            text=cut_at_stop(text, stop),
            input_tokens=len(tokens),
            reused_tokens=min(reused, len(tokens)),
            output_tokens=len(out_ids),
            finish_reason=reason,
            seconds=ended - started,
        )


_ENGINES: dict[tuple[str, int, int, int, int, str | None], _LlamaEngine] = {}
_ENGINES_LOCK = threading.Lock()


@atexit.register
def _close_engines() -> None:
    """Free the models before interpreter teardown: llama_cpp's own ``__del__`` runs too late
    there (its module globals are gone) and prints a TypeError traceback at every exit."""
    with _ENGINES_LOCK:
        for engine in _ENGINES.values():
            with contextlib.suppress(Exception):
                engine.llm.close()
        _ENGINES.clear()


def _get_engine(
    path: str, n_ctx: int, n_threads: int, n_batch: int, cache_bytes: int, lora_path: str | None = None,
    lora_scale: float = 1.0,
) -> _LlamaEngine:
    lora = str(pathlib.Path(lora_path).resolve()) if lora_path else None
    key = (str(pathlib.Path(path).resolve()), n_ctx, n_threads, n_batch, cache_bytes, lora, lora_scale if lora else 1.0)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _LlamaEngine(key[0], n_ctx, n_threads, n_batch, cache_bytes, lora, key[-1])
        return engine


def _default_threads() -> int:
    env = os.environ.get("ROUTE_GRAPH_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else available_cpus()


class LlamaCppChatModel(BaseChatModel):
    """A GGUF model run by llama.cpp in-process, as a LangChain chat model.

    Continues a final assistant message (answer prefill), stops once the reply holds what the
    graph's parsers read, streams tokens, and reports usage plus how many prompt tokens came
    from the prefix cache (``response_metadata["reused_prompt_tokens"]``).
    """

    model_path: str = Field(description="A GGUF model file.")
    lora_path: str | None = Field(
        default=None, description="A LoRA adapter GGUF applied on top (route_graph.models.adapters.lora_gguf)."
    )
    lora_scale: float = Field(
        default=1.0, ge=0.0, le=4.0,
        description="How strongly the LoRA adapter is applied (1.0: as trained; 0: the base model).",
    )
    model_name: str | None = Field(default=None, description="Name reported in metadata.")
    max_new_tokens: int = Field(default=384, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, description="0 means greedy decoding.")
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, description="Sampling seed (temperature > 0).")
    n_ctx: int = Field(
        default=8192, ge=256, description="Context length: the largest Spider prompts need ~2,300 tokens."
    )
    n_batch: int = Field(default=512, ge=8, description="Prompt tokens evaluated per step.")
    num_threads: int | None = Field(
        default=None, description="CPU threads; default env ROUTE_GRAPH_THREADS, else all CPUs of this process."
    )
    prefix_cache_mb: int = Field(
        default=256,
        ge=0,
        description="Memory for saved prompt-prefix KV states (LRU); 0 keeps only the live context.",
    )
    stop_after_answer: bool = Field(
        default=True,
        description="Stop a reply once it holds a closed code fence or a closed JSON object.",
    )

    model_config = ConfigDict(protected_namespaces=())

    continues_final_message: ClassVar[bool] = True  # answer prefill (model_capabilities)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        path = pathlib.Path(self.model_path).expanduser()
        if not path.is_file():
            raise ModelError(f"GGUF model file {str(path)!r} does not exist.")
        if self.lora_path is not None and not pathlib.Path(self.lora_path).expanduser().is_file():
            raise ModelError(f"LoRA adapter GGUF {self.lora_path!r} does not exist.")
        if self.model_name is None:
            self.model_name = path.stem

    @property
    def _llm_type(self) -> str:
        return "route-graph-llamacpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.model_path,
            "lora_path": self.lora_path,
            "lora_scale": self.lora_scale,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
        }

    def engine(self) -> _LlamaEngine:
        """The shared loaded model (loads it on first use)."""
        return _get_engine(
            self.model_path,
            self.n_ctx,
            self.num_threads or _default_threads(),
            self.n_batch,
            self.prefix_cache_mb * 1024 * 1024,
            self.lora_path,
            self.lora_scale,
        )

    def get_token_ids(self, text: str) -> list[int]:
        return self.engine().tokenize(text)

    def render_prompt(self, messages: Sequence[BaseMessage]) -> str:
        """The exact text the model sees: the GGUF's chat template + assistant header or prefill."""
        return self.engine().render(conversation(messages))

    def _run(self, messages: list[BaseMessage], stop: list[str] | None, on_text: Any, kwargs: dict[str, Any]) -> _Output:
        chat = conversation(messages)
        prefix = chat[-1]["content"] if chat and chat[-1]["role"] == "assistant" else ""
        return self.engine().generate(
            self.render_prompt(messages),
            max_new_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            stop=tuple(s for s in (stop or ()) if s),
            stop_after_answer=bool(kwargs.get("stop_after_answer", self.stop_after_answer)),
            answer_prefix=prefix,
            seed=kwargs.get("seed", self.seed),
            on_text=on_text,
        )

    def _message(self, output: _Output, chunk: bool = False) -> AIMessage:
        cls = AIMessageChunk if chunk else AIMessage
        return cls(
            content="" if chunk else output.text,
            usage_metadata={
                "input_tokens": output.input_tokens,
                "output_tokens": output.output_tokens,
                "total_tokens": output.input_tokens + output.output_tokens,
            },
            response_metadata={
                "model_name": self.model_name,
                "backend": "llamacpp",
                "generation_seconds": round(output.seconds, 4),
                "reused_prompt_tokens": output.reused_tokens,
                "finish_reason": output.finish_reason,
            },
        )

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        on_text = None
        if run_manager is not None:
            on_text = lambda piece: run_manager.on_llm_new_token(piece)
        output = self._run(messages, stop, on_text, kwargs)
        return ChatResult(
            generations=[ChatGeneration(message=self._message(output))],
            llm_output={"model_name": self.model_name},
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """Token streaming: generation runs in a worker thread, pieces are yielded as they come."""
        import queue

        pieces: queue.Queue[Any] = queue.Queue()
        done = object()
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["output"] = self._run(messages, stop, pieces.put, kwargs)
            except BaseException as exc:  # noqa: BLE001 (handed to the consumer below)
                result["error"] = exc
            finally:
                pieces.put(done)

        worker = threading.Thread(target=work, name="route-graph-llamacpp-stream", daemon=True)
        worker.start()
        while (piece := pieces.get()) is not done:
            if run_manager is not None:
                run_manager.on_llm_new_token(piece)
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
        worker.join()
        if "error" in result:
            raise result["error"]
        yield ChatGenerationChunk(message=self._message(result["output"], chunk=True))
