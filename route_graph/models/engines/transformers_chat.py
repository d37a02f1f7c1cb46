"""The transformers engine: a local Hugging Face causal LM as a micro-batching LangChain chat model.

Where it wins: CPUs with AMX / AVX512-BF16 (bf16 matmuls) and GPUs, and any Hugging Face model
directory (a merged fine-tune). On a CPU the lever for throughput there is batching: concurrent
callers (``graph.batch``, evaluation with ``max_concurrency``) are gathered for a few milliseconds
and answered by one padded ``generate`` call: on 2 AMX cores a batch of eight short SQL answers
took 1.2–1.6× the time of one answered alone. On AVX2-only CPUs fp32 batching is *slower*
(3.1 tok/s aggregate at batch 8 vs 6.2 at batch 1, benchmarks/HISTORY.md), so the factory
gives those CPUs ``max_batch_size=1`` and prefers the llama.cpp engine.

It behaves like any LangChain chat model: ``stream``/``astream`` (whole-reply chunks, see
``TransformersChatModel._stream``) and ``ainvoke``/``abatch`` that wait on the batcher without
blocking the event loop, so async callers are batched like threads.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import os
import pathlib
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list, get_executor_for_config
from pydantic import ConfigDict, Field

from route_graph.errors import ModelError
from route_graph.models.engines.chat_common import (
    answer_is_complete,
    conversation,
    cut_at_stop,
    message_role,
    message_text,
)

__all__ = [
    "MAX_PADDING_TOKENS",
    "TransformersChatModel",
    "batching_pays",
    "check_model_dir",
    "cpu_supports_bf16",
]

log = logging.getLogger(__name__)

# Padding one batch may add before it is split by prompt length (~4 s of CPU prefill for the
# default model on 2 cores, about what the extra part's decode steps cost).
MAX_PADDING_TOKENS = 2048
_ARRIVAL_TIMEOUT_S = 10.0  # longest the batcher waits for batch() callers on their way


def check_model_dir(path: str | os.PathLike[str]) -> pathlib.Path:
    """``path`` as a resolved Hugging Face model directory, or a ModelError saying what is wrong."""
    directory = pathlib.Path(path).expanduser()
    if not directory.is_dir():
        raise ModelError(f"Model directory {str(directory)!r} does not exist.")
    if not (directory / "config.json").is_file():
        raise ModelError(
            f"{str(directory)!r} is not a Hugging Face model directory (no config.json). "
            "Point at the folder written by save_pretrained(), e.g. a merged fine-tuned model."
        )
    return directory.resolve()


def cpu_supports_bf16() -> bool:
    """bf16 matmuls are fast only with AMX / AVX512-BF16 (x86) or BF16 (ARM); else use fp32."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        with contextlib.suppress(RuntimeError, TypeError):  # private API, may misbehave
            if check is not None and check():
                return True
    try:
        with open("/proc/cpuinfo") as handle:
            flags = set(handle.read().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def batching_pays(dtype: str = "auto") -> bool:
    """Micro-batching pays on GPUs and bf16 CPUs (AMX), not in fp32 on CPUs.

    Measured (benchmarks/HISTORY.md): on 2 AMX cores a batch of eight short answers took
    1.2-1.6x one answer's time; on 2 AVX2-only cores in fp32, eight in flight decoded 3.1 tok/s
    in aggregate against 6.2 tok/s for one at a time.
    """
    import torch

    return torch.cuda.is_available() or _resolve_dtype(dtype) != torch.float32


def _resolve_dtype(name: str) -> Any:
    import torch

    if name == "auto":
        name = os.environ.get("ROUTE_GRAPH_DTYPE", "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    try:
        return {
            "bfloat16": torch.bfloat16,
            "float32": torch.float32,
            "float16": torch.float16,
        }[name]
    except KeyError:
        raise ModelError(
            f"Unknown dtype {name!r}: use 'auto', 'bfloat16', 'float32' or 'float16'."
        ) from None


@dataclass
class _Request:
    """One chat turn waiting for the batcher."""

    prompt: str
    max_new_tokens: int
    temperature: float
    top_p: float
    stop: tuple[str, ...]
    stop_after_answer: bool
    window_s: float
    max_batch: int
    answer_prefix: str = ""  # the assistant text the reply continues (answer prefill)
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)

    @property
    def sampling_key(self) -> tuple[bool, float, float]:
        sample = self.temperature > 0
        return (
            sample,
            self.temperature if sample else 0.0,
            self.top_p if sample else 1.0,
        )


@dataclass
class _Output:
    text: str
    input_tokens: int
    output_tokens: int
    finish_reason: str
    seconds: float
    batch_size: int


class _RowStopper:
    """Per-row stopping: EOS, stop strings and each request's own token budget.

    transformers' stopping criteria may return one flag per row; finished rows are padded
    while the others continue. It also records where each row ended, for exact token counts.
    """

    def __init__(
        self,
        tokenizer: Any,
        prompt_len: int,
        requests: Sequence[_Request],
        eos: set[int],
    ):
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len
        self.stops = [r.stop for r in requests]
        self.answer_stops = [r.stop_after_answer for r in requests]
        self.prefixes = [r.answer_prefix for r in requests]
        self.budgets = [r.max_new_tokens for r in requests]
        self.eos = eos
        self.ended_at: list[int | None] = [None] * len(requests)
        self.reasons: list[str] = ["length"] * len(requests)
        self.tail = max((len(s) for r in requests for s in r.stop), default=0) + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        generated = input_ids[:, self.prompt_len :]
        count = generated.shape[1]
        last = generated[:, -1].tolist() if count else []
        flags = []
        for row in range(generated.shape[0]):
            if self.ended_at[row] is None and count > 0:
                stopped = (
                    last[row] in self.eos
                    or (self.stops[row] and self._hit_stop(generated[row], row))
                    or (self.answer_stops[row] and self._answer_complete(generated[row], last[row], row))
                )
                if stopped:
                    self.ended_at[row], self.reasons[row] = count, "stop"
                elif count >= self.budgets[row]:
                    self.ended_at[row], self.reasons[row] = count, "length"
            flags.append(self.ended_at[row] is not None)
        return torch.tensor(flags, dtype=torch.bool, device=input_ids.device)

    def _answer_complete(self, ids: Any, last_id: int, row: int) -> bool:
        # Only a token that closes a fence or a brace can complete an answer.
        piece = self.tokenizer.decode([last_id], skip_special_tokens=True)
        if "`" not in piece and "}" not in piece:
            return False
        return answer_is_complete(self.prefixes[row] + self.tokenizer.decode(ids, skip_special_tokens=True))

    def _hit_stop(self, ids: Any, row: int) -> bool:
        # A stop string can only span its last few tokens; decoding the tail keeps this cheap.
        tail = self.tokenizer.decode(ids[-self.tail :], skip_special_tokens=True)
        return any(stop in tail for stop in self.stops[row])


class _Engine:
    """One loaded model + tokenizer + the worker thread that batches requests for it."""

    def __init__(self, path: str, dtype: Any, num_threads: int | None):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError(
                f"Local models need the local extra ({exc.name} is missing): "
                "pip install torch==2.13.0 'route-graph[transformers]'"
            ) from exc
        from route_graph.models.cache import _dtype_kwarg

        env_threads = os.environ.get("ROUTE_GRAPH_THREADS", "").strip()
        if not num_threads and env_threads.isdigit() and int(env_threads) > 0:
            num_threads = int(env_threads)
        if num_threads:  # never change the process-wide torch setting unasked
            torch.set_num_threads(num_threads)
        started = time.perf_counter()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, **_dtype_kwarg(dtype)
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"Could not load the model in {path!r}: {exc}") from exc
        # A GPU, when there is one, is used as is; CPU is the platform this is tuned for.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()
        self.load_seconds = time.perf_counter() - started
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(
                f"The tokenizer in {path!r} has no chat template, so chat messages cannot be "
                "formatted. Use an instruct/chat model, or set tokenizer.chat_template and "
                "save_pretrained() it again."
            )
        self.tokenizer.padding_side = "left"  # generation continues at the right edge
        gen_eos = self.model.generation_config.eos_token_id
        eos = gen_eos if isinstance(gen_eos, list) else [gen_eos]
        self.eos = {int(e) for e in eos if e is not None}
        if self.tokenizer.eos_token_id is not None:
            self.eos.add(int(self.tokenizer.eos_token_id))
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.pad_id = int(self.tokenizer.pad_token_id)
        self.path = path
        self._pending: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._arriving = 0  # batch() callers that started but have not submitted yet
        self._local = threading.local()
        self._worker: threading.Thread | None = None
        self.batches_run = 0  # for tests and benchmarks

    # ---- public to the chat model
    def render(self, conversation: list[dict[str, str]]) -> str:
        # A final assistant message is an answer prefill: the reply continues it.
        prefilled = bool(conversation) and conversation[-1]["role"] == "assistant"
        return self.tokenizer.apply_chat_template(
            conversation,
            add_generation_prompt=not prefilled,
            continue_final_message=prefilled,
            tokenize=False,
        )

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Mark this thread as about to submit (used by ``batch``): the batcher waits for it.

        Thread start-up under load can exceed any fixed window; counting callers that are on
        their way makes ``llm.batch`` one padded ``generate`` regardless. The wait is capped
        by ``_ARRIVAL_TIMEOUT_S`` in case a caller is slow for other reasons.
        """
        with self._cond:
            self._arriving += 1
        self._local.arriving = True
        try:
            yield
        finally:
            if getattr(
                self._local, "arriving", False
            ):  # never submitted (error, cache hit)
                self._local.arriving = False
                with self._cond:
                    self._arriving -= 1
                    self._cond.notify_all()

    def submit(self, requests: Sequence[_Request]) -> None:
        with self._cond:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._loop,
                    name=f"route-graph-generate:{self.path}",
                    daemon=True,
                )
                self._worker.start()
            self._pending.extend(requests)
            if getattr(self._local, "arriving", False):
                self._local.arriving = False
                self._arriving -= 1
            self._cond.notify_all()

    # ---- worker thread
    def _next_batch(self) -> list[_Request]:
        """Block for a first request, then gather company until the window (or batch) closes."""
        with self._cond:
            while not self._pending:
                self._cond.wait()
            first = self._pending[0]
            start = time.monotonic()
            window_end = start + first.window_s
            arrival_end = start + _ARRIVAL_TIMEOUT_S
            while len(self._pending) < first.max_batch:
                now = time.monotonic()
                end = arrival_end if self._arriving > 0 else window_end
                if now >= end:
                    break
                self._cond.wait(end - now)
            take = min(len(self._pending), first.max_batch)
            return [self._pending.popleft() for _ in range(take)]

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            groups: dict[tuple[bool, float, float], list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.sampling_key, []).append(request)
            for group in groups.values():
                for part in self._length_parts(group):
                    try:
                        outputs = self._generate(part)
                    except Exception as exc:  # hand every waiting caller the failure
                        log.exception("generate failed for a batch of %d", len(part))
                        for request in part:
                            _settle(request.future, exception=exc)
                    else:
                        for request, output in zip(part, outputs):
                            _settle(request.future, result=output)

    def _length_parts(self, requests: list[_Request]) -> list[list[_Request]]:
        """Split a batch so that no part pads more than ``MAX_PADDING_TOKENS`` prompt tokens.

        A padded batch computes every row at the longest prompt's length: one big schema in a
        batch of short prompts would multiply the prefill work. A separate part costs only its
        own decode steps, which is cheaper than that much padding.
        """
        if len(requests) < 2:
            return [requests]
        lengths = [len(self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"]) for r in requests]
        parts: list[list[_Request]] = []
        current: list[_Request] = []
        total = 0
        for i in sorted(range(len(requests)), key=lengths.__getitem__):
            if current and lengths[i] * (len(current) + 1) - (total + lengths[i]) > MAX_PADDING_TOKENS:
                parts.append(current)
                current, total = [], 0
            current.append(requests[i])
            total += lengths[i]
        parts.append(current)
        return parts

    def _generate(self, requests: list[_Request]) -> list[_Output]:
        import torch

        started = time.perf_counter()
        encoded = self.tokenizer(
            [r.prompt for r in requests],
            return_tensors="pt",
            padding=True,
            add_special_tokens=False,  # the chat template already wrote every special token
        ).to(self.device)
        prompt_len = encoded["input_ids"].shape[1]
        stopper = _RowStopper(self.tokenizer, prompt_len, requests, self.eos)
        sample, temperature, top_p = requests[0].sampling_key
        options: dict[str, Any] = {"do_sample": sample}
        if sample:
            options.update(temperature=temperature, top_p=top_p, top_k=0)
        else:  # neutralize sampling knobs a model's generation_config may carry
            options.update(temperature=None, top_p=None, top_k=None)
        from transformers import StoppingCriteria, StoppingCriteriaList

        class _Adapter(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return stopper(input_ids, scores, **kw)

        with torch.inference_mode():
            output = self.model.generate(
                **encoded,
                max_new_tokens=max(r.max_new_tokens for r in requests),
                stopping_criteria=StoppingCriteriaList([_Adapter()]),
                pad_token_id=self.pad_id,
                eos_token_id=sorted(self.eos),
                **options,
            )
        self.batches_run += 1
        seconds = time.perf_counter() - started
        generated = output[:, prompt_len:]
        log.debug(
            "batch of %d: %d prompt tokens padded to %d each, %d decode steps, %.1f s",
            len(requests), int(encoded["attention_mask"].sum()), prompt_len, generated.shape[1], seconds,
        )
        prompt_tokens = encoded["attention_mask"].sum(dim=1).tolist()
        results = []
        for row, request in enumerate(requests):
            end = stopper.ended_at[row]
            end = generated.shape[1] if end is None else end
            text = self.tokenizer.decode(generated[row, :end], skip_special_tokens=True)
            results.append(
                _Output(
                    text=cut_at_stop(text, request.stop),
                    input_tokens=int(prompt_tokens[row]),
                    output_tokens=int(end),
                    finish_reason=stopper.reasons[row],
                    seconds=seconds,
                    batch_size=len(requests),
                )
            )
        return results


def _settle(
    future: concurrent.futures.Future, *, result: Any = None, exception: BaseException | None = None
) -> None:
    """Hand a caller its answer; a caller that gave up (a cancelled ``ainvoke``) gets nothing.

    A cancelled future refuses a result; raising here would kill the worker and strand the
    rest of the batch.
    """
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(result)


_ENGINES: dict[tuple[str, str], _Engine] = {}
_ENGINES_LOCK = threading.Lock()


def _get_engine(path: str, dtype: str, num_threads: int | None) -> _Engine:
    """Load each (directory, dtype) once per process, however many chat models use it."""
    torch_dtype = _resolve_dtype(dtype)
    key = (str(pathlib.Path(path).resolve()), str(torch_dtype))
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = _ENGINES[key] = _Engine(key[0], torch_dtype, num_threads)
        return engine


class TransformersChatModel(BaseChatModel):
    """A local Hugging Face causal LM as a LangChain chat model, with micro-batching.

    Every call goes through a per-model worker thread. Requests that arrive within
    ``batch_window_ms`` of each other (up to ``max_batch_size``) share one left-padded
    ``generate``; greedy decoding (``temperature == 0``) gives the same text as one at a time
    in float32 (in bfloat16 a rare near-tie can flip, as with any change of batch shape).
    """

    model_path: str = Field(
        description="Hugging Face model directory (save_pretrained output)."
    )
    model_name: str | None = Field(
        default=None, description="Name reported in metadata."
    )
    max_new_tokens: int = Field(default=384, ge=1)
    temperature: float = Field(
        default=0.0, ge=0.0, description="0 means greedy decoding."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = Field(
        default="auto",
        description="'auto': bf16 where the CPU has AMX/AVX512-BF16 (or on GPU), else fp32. "
        "Env ROUTE_GRAPH_DTYPE overrides 'auto'.",
    )
    batch_window_ms: float = Field(
        default=20.0,
        ge=0.0,
        description="How long the first request waits for company.",
    )
    max_batch_size: int = Field(default=8, ge=1)
    stop_after_answer: bool = Field(
        default=True,
        description="Stop a reply once it holds a closed code fence or a closed JSON object "
        "(what the route-graph parsers read), instead of letting the model explain its SQL.",
    )
    num_threads: int | None = Field(
        default=None,
        description="torch threads (process-wide, so only set when given here or by env "
        "ROUTE_GRAPH_THREADS); else torch's own setting. Fewer helps when other processes keep "
        "the cores busy.",
    )

    model_config = ConfigDict(protected_namespaces=())

    continues_final_message: ClassVar[bool] = True  # answer prefill (model_capabilities)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        check_model_dir(self.model_path)  # fail at construction, not at the first question
        if self.model_name is None:
            self.model_name = pathlib.Path(self.model_path).name

    @property
    def _llm_type(self) -> str:
        return "route-graph-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "model_path": self.model_path,
            "dtype": self.dtype,
            "temperature": self.temperature,
            "max_new_tokens": self.max_new_tokens,
        }

    def engine(self) -> _Engine:
        """The shared loaded model (loads it on first use)."""
        return _get_engine(self.model_path, self.dtype, self.num_threads)

    def get_token_ids(self, text: str) -> list[int]:
        # The base class would fetch GPT-2's tokenizer from the hub; use the model's own.
        return self.engine().tokenizer.encode(text, add_special_tokens=False)

    def render_prompt(self, messages: Sequence[BaseMessage]) -> str:
        """The exact text the model sees: the tokenizer's chat template + assistant header."""
        return self.engine().render(conversation(messages))

    def _submit(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Request:
        """Render the prompt and queue it for the batcher; the answer arrives on ``request.future``."""
        engine = self.engine()
        request = _Request(
            prompt=self.render_prompt(messages),
            max_new_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)),
            temperature=float(kwargs.get("temperature", self.temperature)),
            top_p=float(kwargs.get("top_p", self.top_p)),
            stop=tuple(s for s in (stop or ()) if s),
            stop_after_answer=bool(kwargs.get("stop_after_answer", self.stop_after_answer)),
            window_s=self.batch_window_ms / 1000.0,
            max_batch=self.max_batch_size,
            answer_prefix=message_text(messages[-1]) if messages and message_role(messages[-1]) == "assistant" else "",
        )
        engine.submit([request])
        return request

    async def _asubmit(self, messages: list[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> _Output:
        """``_submit`` off the event loop (loading the model, the chat template), then await the batcher."""
        loop = asyncio.get_running_loop()
        request = await loop.run_in_executor(None, self._submit, messages, stop, kwargs)
        return await asyncio.wrap_future(request.future)

    def _usage(self, output: _Output) -> dict[str, int]:
        return {
            "input_tokens": output.input_tokens,
            "output_tokens": output.output_tokens,
            "total_tokens": output.input_tokens + output.output_tokens,
        }

    def _response_metadata(self, output: _Output) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "generation_seconds": round(output.seconds, 4),
            "batch_size": output.batch_size,
            "finish_reason": output.finish_reason,
        }

    def _result(self, output: _Output) -> ChatResult:
        message = AIMessage(
            content=output.text,
            usage_metadata=self._usage(output),  # type: ignore[arg-type]
            response_metadata=self._response_metadata(output),
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": self.model_name},
        )

    def _chunks(self, output: _Output) -> list[ChatGenerationChunk]:
        """The reply as a text chunk, then an empty chunk with usage and metadata (as providers end)."""
        chunks = [ChatGenerationChunk(message=AIMessageChunk(content=output.text))] if output.text else []
        chunks.append(
            ChatGenerationChunk(
                message=AIMessageChunk(
                    content="",
                    usage_metadata=self._usage(output),  # type: ignore[arg-type]
                    response_metadata=self._response_metadata(output),
                )
            )
        )
        return chunks

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return self._result(self._submit(messages, stop, kwargs).future.result())

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Awaits the batcher: the event loop runs on, and concurrent ``ainvoke`` calls share batches."""
        return self._result(await self._asubmit(messages, stop, kwargs))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        """``stream()``: the whole reply as one text chunk, then a chunk with usage.

        Not token by token: a streamed call goes through the batcher like any other (one padded
        ``generate`` for many callers), and batched rows finish together, so the reply is yielded
        once it is complete. What streaming consumers need still holds: chunks that add up to the
        ``invoke`` answer, ``on_llm_new_token`` callbacks, and ``usage_metadata`` on the last chunk.
        """
        for chunk in self._chunks(self._submit(messages, stop, kwargs).future.result()):
            if run_manager is not None and chunk.text:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """``astream()``: as ``_stream``, awaiting the batcher instead of blocking the event loop."""
        for chunk in self._chunks(await self._asubmit(messages, stop, kwargs)):
            if run_manager is not None and chunk.text:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[Any]:
        """Like the default, but the inputs reach the batcher together: one padded generate.

        Runs ``max_batch_size`` threads (unless ``max_concurrency`` says otherwise), each
        marked as arriving, so the batcher waits for them instead of a time window.
        """
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        if configs[0].get("max_concurrency") is None:
            configs = [{**c, "max_concurrency": self.max_batch_size} for c in configs]
        engine = self.engine()

        def one(input_: Any, one_config: RunnableConfig) -> BaseMessage | Exception:
            with engine.arriving():
                try:
                    return self.invoke(input_, one_config, **kwargs)
                except Exception as exc:
                    if return_exceptions:
                        return exc
                    raise

        if len(inputs) == 1:
            return [one(inputs[0], configs[0])]
        with get_executor_for_config(configs[0]) as executor:
            return list(executor.map(one, inputs, configs))