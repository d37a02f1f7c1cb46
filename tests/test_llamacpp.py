"""The llama.cpp engine: chat rendering, stop rules, prefix LRU, engine choice; one slow real run.

Fast tests replace ``llama_cpp.Llama`` with a scripted stand-in (a token-per-character "model"
that writes a fixed reply), so they test our loop, not llama.cpp. The slow tests run the real
offline GGUF: the answer of a real Spider question, and greedy text that is the same with and
without prefix reuse.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from route_graph import prompts
from route_graph.errors import ModelError
from route_graph.model_capabilities import continuing_model
from route_graph.models import choose_backend
from route_graph.models.cache import QWEN_CHATML_TEMPLATE
from route_graph.models.engines import llamacpp_chat
from route_graph.models.engines.llamacpp_chat import (
    LlamaCppChatModel,
    _PrefixLRU,
    rebuild_hint,
    render_chat,
)
from route_graph.models.spec import parse_model_spec
from route_graph.rendering import render_ddl

# --------------------------------------------------------------------------- chat rendering

CHATS = [
    [{"role": "user", "content": "How many singers?"}],
    [{"role": "system", "content": "You write SQL."}, {"role": "user", "content": "Count rows."}],
    [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "```sql\nSELECT 1\n```"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "```sql\n"},  # answer prefill, trailing newline kept
    ],
    [{"role": "user", "content": "Links?"}, {"role": "assistant", "content": "{"}],
]


@pytest.mark.parametrize("chat", CHATS)
def test_render_matches_transformers(chat):
    """Both engines must see one prompt text: same as transformers' apply_chat_template."""
    transformers = pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    prefilled = chat[-1]["role"] == "assistant"
    expected, _ = render_jinja_template(
        conversations=[chat],
        chat_template=QWEN_CHATML_TEMPLATE,
        add_generation_prompt=not prefilled,
        continue_final_message=prefilled,
    )
    assert transformers  # the import above is what this test compares against
    assert render_chat(QWEN_CHATML_TEMPLATE, chat) == expected[0]


def test_render_prefill_ends_inside_the_assistant_turn():
    text = render_chat(QWEN_CHATML_TEMPLATE, CHATS[2])
    assert text.endswith("<|im_start|>assistant\n```sql\n")
    assert text.count("<|im_end|>") == 4


# --------------------------------------------------------------------------- a scripted Llama


class FakeLlama:
    """Characters are tokens (id = ord + 10); 1 is EOS. Replies with ``REPLY`` after the prompt."""

    REPLY = "```sql\nSELECT 1\n```\nThis query counts."
    instances: list[FakeLlama] = []

    def __init__(self, model_path: str, n_ctx: int, **kwargs):
        self.model_path = model_path
        self.n_ctx_value = n_ctx
        self.metadata = {"tokenizer.chat_template": QWEN_CHATML_TEMPLATE}
        self.input_ids = np.zeros(n_ctx, dtype=np.intc)
        self.n_tokens = 0
        self.evaluated: list[int] = []  # how many prompt tokens each call had to evaluate
        self.seeds: list[int] = []
        FakeLlama.instances.append(self)

    def token_eos(self) -> int:
        return 1

    def tokenize(self, text: bytes, add_bos: bool = False, special: bool = False) -> list[int]:
        if text == b"<|im_end|>":
            return [2]
        return [b + 10 for b in text]

    def detokenize(self, tokens, prev_tokens=None, special=False) -> bytes:
        return bytes(t - 10 for t in tokens)

    def set_seed(self, seed: int) -> None:
        self.seeds.append(seed)

    def reset(self) -> None:
        self.n_tokens = 0

    def generate(self, tokens, reset=True, **kwargs):
        tokens = list(tokens)
        keep = 0
        for a, b in zip(self.input_ids[: self.n_tokens].tolist(), tokens):
            if a != b:
                break
            keep += 1
        self.evaluated.append(len(tokens) - keep)
        self.input_ids[: len(tokens)] = tokens
        self.n_tokens = len(tokens)
        for ch in self.REPLY.encode():
            self.input_ids[self.n_tokens] = ch + 10
            self.n_tokens += 1
            yield ch + 10
        yield 1


@pytest.fixture
def fake_llama(monkeypatch, tmp_path: Path):
    module = types.ModuleType("llama_cpp")
    module.Llama = FakeLlama
    module.llama_state_get_size = lambda ctx: 0  # the LRU is tested on its own below
    monkeypatch.setitem(sys.modules, "llama_cpp", module)
    monkeypatch.setattr(llamacpp_chat, "_ENGINES", {})
    FakeLlama.instances.clear()
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"GGUF")
    return gguf


def test_a_gguf_without_a_chat_template_gets_qwens(fake_llama):
    """The fallback template comes from the offline weights cache (route_graph.models.cache)."""

    class NoTemplate(FakeLlama):
        def __init__(self, model_path: str, n_ctx: int, **kwargs):
            super().__init__(model_path, n_ctx, **kwargs)
            self.metadata = {}

    sys.modules["llama_cpp"].Llama = NoTemplate
    llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0)
    assert llm.engine().template == QWEN_CHATML_TEMPLATE


def test_reply_stops_after_the_closed_fence_and_reports_usage(fake_llama):
    llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0)
    reply = llm.invoke([HumanMessage("How many?")])
    assert reply.content == "```sql\nSELECT 1\n```"  # not the explanation after it
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.usage_metadata["output_tokens"] == len("```sql\nSELECT 1\n```")
    prompt = llm.render_prompt([HumanMessage("How many?")])
    assert reply.usage_metadata["input_tokens"] == len(prompt.encode())


def test_without_stop_rule_the_reply_runs_to_eos_or_budget(fake_llama):
    llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0, stop_after_answer=False)
    assert llm.invoke("Hi").content == FakeLlama.REPLY
    short = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0, stop_after_answer=False, max_new_tokens=5)
    reply = short.invoke("Hi")
    assert reply.content == FakeLlama.REPLY[:5] and reply.response_metadata["finish_reason"] == "length"


def test_stop_strings_cut_the_reply(fake_llama):
    llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0, stop_after_answer=False)
    assert llm.invoke("Hi", stop=["SELECT"]).content == "```sql\n"


def test_prefilled_answer_is_continued(fake_llama):
    """The fence opened by the prefill counts toward the stop rule (the reply closes it)."""
    FakeLlama.REPLY = "SELECT 2\n```\nmore text"
    try:
        llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0)
        messages = [HumanMessage("Q"), AIMessage("```sql\n")]
        assert continuing_model(llm) is llm
        assert llm.render_prompt(messages).endswith("<|im_start|>assistant\n```sql\n")
        assert llm.invoke(messages).content == "SELECT 2\n```"
    finally:
        FakeLlama.REPLY = "```sql\nSELECT 1\n```\nThis query counts."


def test_shared_prefix_is_not_evaluated_again(fake_llama):
    llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0)
    schema = "CREATE TABLE singer (id INTEGER, name TEXT);\n" * 5
    first = llm.invoke([SystemMessage("S"), HumanMessage(schema + "Question: how many?")])
    second = llm.invoke([SystemMessage("S"), HumanMessage(schema + "Question: which names?")])
    fake = FakeLlama.instances[-1]
    assert fake.evaluated[0] == first.usage_metadata["input_tokens"]
    assert fake.evaluated[1] < len("Question: which names?") + 40  # schema came from the cache
    assert second.response_metadata["reused_prompt_tokens"] == second.usage_metadata["input_tokens"] - fake.evaluated[1]
    stats = llm.engine().stats.as_dict()
    assert stats["calls"] == 2 and 0 < stats["prefix_hit_rate"] < 1


def test_streaming_yields_the_same_text(fake_llama):
    llm = LlamaCppChatModel(model_path=str(fake_llama), prefix_cache_mb=0)
    chunks = list(llm.stream("Hi"))
    assert "".join(str(c.content) for c in chunks).startswith("```sql\nSELECT 1\n```")
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.usage_metadata["output_tokens"] == len("```sql\nSELECT 1\n```")


def test_prompt_longer_than_context_is_a_clear_error(fake_llama):
    llm = LlamaCppChatModel(model_path=str(fake_llama), n_ctx=256, prefix_cache_mb=0)
    with pytest.raises(ModelError, match="context"):
        llm.invoke("x" * 400)


def test_missing_gguf_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        LlamaCppChatModel(model_path=str(tmp_path / "nope.gguf"))


# --------------------------------------------------------------------------- build check

AVX2_BUILD = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | OPENMP = 1 | REPACK = 1 | "
AVX512_BUILD = "CPU : SSE3 = 1 | AVX2 = 1 | FMA = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AVX512_BF16 = 1 | OPENMP = 1 | "
AVX512_CPU = "fpu avx2 fma f16c avx512f avx512cd avx512vl avx512dq avx512bw"


@pytest.mark.parametrize(
    ("build", "flags", "hinted"),
    [
        (AVX2_BUILD, AVX512_CPU, True),  # the CPU's AVX-512 left unused
        (AVX512_BUILD, AVX512_CPU, False),
        (AVX2_BUILD, "fpu avx2 fma f16c", False),  # nothing better to build
        (AVX2_BUILD, "fpu avx2 fma f16c avx512f avx512cd", False),  # the build script would not turn AVX-512 on
    ],
)
def test_rebuild_hint_only_when_the_build_leaves_avx512_unused(build, flags, hinted):
    hint = rebuild_hint(build, f"processor\t: 0\nflags\t\t: {flags}\n", "0.3.36")
    assert (hint is not None) == hinted
    if hint:
        assert "scripts/llama_cpp_cmake_args.py" in hint and "--no-cache-dir" in hint
        assert "llama-cpp-python==0.3.36" in hint  # the rebuild keeps the pinned version


def test_installed_build_uses_this_cpus_avx512():
    """The real build the README made: on an AVX-512 machine it must carry AVX-512 kernels."""
    llama_cpp = pytest.importorskip("llama_cpp")
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo: the build script falls back to the portable flags")
    info = llama_cpp.llama_print_system_info().decode()
    assert rebuild_hint(info, cpuinfo.read_text()) is None, info


# --------------------------------------------------------------------------- prefix LRU


def test_lru_finds_longest_prefix_and_stays_within_bytes():
    lru = _PrefixLRU(capacity_bytes=10)
    lru.put((1, 2, 3), b"aaaa")
    lru.put((1, 2, 9, 9), b"bbbb")
    saved, n = lru.best([1, 2, 9, 9, 5])
    assert saved.state == b"bbbb" and n == 4
    saved, n = lru.best([1, 2, 3, 7])
    assert saved.state == b"aaaa" and n == 3
    lru.put((4,), b"cccc")  # over 10 bytes: the least recently used, (1, 2, 9, 9), goes
    assert set(lru.entries) == {(1, 2, 3), (4,)} and lru.size == 8
    lru.put((5,), b"x" * 11)  # larger than the whole budget: not kept
    assert (5,) not in lru.entries
    assert lru.best([7, 7]) == (None, 0)


# --------------------------------------------------------------------------- engine choice


@pytest.mark.parametrize(
    ("spec", "installed", "env", "expected"),
    [
        (None, True, "", "llamacpp"),
        (None, False, "", "transformers"),
        ("transformers:default", True, "", "transformers"),
        ("llamacpp:qwen2.5-coder-0.5b", False, "", "llamacpp"),
        (None, True, "transformers", "transformers"),
        ("./model.gguf", False, "", "llamacpp"),
        ("./merged-model", True, "", "transformers"),
        ("hf:Qwen/Qwen2.5-Coder-0.5B-Instruct", True, "", "transformers"),
    ],
)
def test_choose_backend(monkeypatch, spec, installed, env, expected):
    monkeypatch.setattr(llamacpp_chat, "llamacpp_available", lambda: installed)
    monkeypatch.setenv("ROUTE_GRAPH_BACKEND", env)
    assert choose_backend(parse_model_spec(spec)) == expected


@pytest.mark.parametrize(
    ("spec", "env", "message"),
    [
        ("llamacpp:./merged-model", "", "GGUF"),
        ("transformers:./model.gguf", "", "GGUF file"),
        (None, "onnx", "Unknown engine"),
    ],
)
def test_choose_backend_refuses_what_cannot_work(monkeypatch, spec, env, message):
    monkeypatch.setenv("ROUTE_GRAPH_BACKEND", env)
    with pytest.raises(ModelError, match=message):
        choose_backend(parse_model_spec(spec))


def test_llamacpp_prefix_on_a_server_spec_is_refused():
    with pytest.raises(ModelError, match="takes no"):
        parse_model_spec("llamacpp:openai:http://127.0.0.1:8000/v1#m")


# --------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_default_engine_answers_a_spider_question(data_dir: Path):
    from route_graph import RouteConfig, build_route_graph, load_chat_model

    pytest.importorskip("llama_cpp", reason="CI installs llama-cpp-python with the [local] extra")
    llm = load_chat_model()
    assert isinstance(llm, LlamaCppChatModel)
    db = data_dir / "spider_train" / "database" / "race_track" / "race_track.sqlite"
    out = build_route_graph(llm, db, RouteConfig()).invoke({"question": "How many tracks are there?"})
    assert out["result"]["ok"], out["trace"]
    assert out["result"]["rows"] == [[9]], out["sql"]


@pytest.mark.slow
def test_prefix_reuse_does_not_change_greedy_output(data_dir: Path):
    """Greedy text with the cached schema prefix equals the text from an empty context.

    Asked as the graph asks (answer prefilled, short SQL answers). llama.cpp computes a cached
    prefix in other batch shapes than a whole prompt, so float sums differ in the last bits: in
    a ~90-token free-text explanation (no prefill) one near-tie flipped on this CPU.
    """
    from route_graph import open_database, prompts

    pytest.importorskip("llama_cpp", reason="CI installs llama-cpp-python with the [local] extra")
    from route_graph.models import load_chat_model

    db = open_database(data_dir / "spider_train" / "database" / "race_track" / "race_track.sqlite")
    schema = render_ddl(db, sample_rows=3)
    questions = ["How many tracks are there?", "List the names of races held after 2000.", "What is the average seating of tracks?"]
    # On the untuned base: with a LoRA adapter (the tuned default) a reused KV state does change a
    # few greedy answers (3 of 20 for phase 3b; benchmarks/RESULTS.md footnote 8).
    cached = load_chat_model("qwen2.5-coder-0.5b", max_new_tokens=96)
    fresh_engine_llm = load_chat_model("qwen2.5-coder-0.5b", max_new_tokens=96, prefix_cache_mb=0)  # a second engine
    assert cached.engine() is not fresh_engine_llm.engine()
    prefill = {"role": "assistant", "content": prompts.answer_prefill("ts")}  # as the graph asks

    def ask(llm, question: str) -> str:
        return llm.invoke([*prompts.ts_messages(question, schema), prefill]).content

    with_reuse = [ask(cached, q) for q in questions]
    assert cached.engine().stats.reused_tokens > 0
    without = []
    for q in questions:
        fresh_engine_llm.engine().llm.reset()  # empty context: the whole prompt is evaluated
        without.append(ask(fresh_engine_llm, q))
    assert fresh_engine_llm.engine().stats.reused_tokens == 0
    assert with_reuse == without


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "prefix", "target"),
    [
        ("ts", "", prompts.ts_completion("SELECT name FROM singer")),
        ("sl", "", prompts.sl_completion({"singer": ["name", "age"]})),
        ("cw", "SELECT name FROM singer WHERE", prompts.cw_completion("SELECT name FROM singer WHERE age > 3")),
        ("nc_repair", "", prompts.nc_repair_completion("SELECT name FROM singer")),
    ],
)
def test_answer_prefill_ends_on_a_token_boundary_of_the_target(task, prefix, target):
    """The prefill's tokens open the training target's tokens, so a tuned model continues from a
    boundary it was trained on. A bare '{' failed this for SL ('{"' is one token) and cost the
    MSFT v3 model its schema links (benchmarks/HISTORY.md)."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="CI installs llama-cpp-python with the [local] extra")
    from route_graph.models.cache import ensure_offline_gguf
    from route_graph.models.spec import DEFAULT_MODEL

    vocab = llama_cpp.Llama(model_path=str(ensure_offline_gguf(DEFAULT_MODEL)), vocab_only=True, verbose=False)

    def tokens(text: str) -> list[int]:
        return vocab.tokenize(text.encode(), add_bos=False, special=False)

    prefill = prompts.answer_prefill(task, prefix)
    assert tokens(target)[: len(tokens(prefill))] == tokens(prefill), (prefill, target)
