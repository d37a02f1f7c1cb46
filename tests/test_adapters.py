"""LoRA adapters on local models ('BASE+ADAPTER'): spec parsing, the llama.cpp GGUF conversion,
the cached merge for transformers, and the real llama.cpp engine applying an adapter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from route_graph.errors import ModelError
from route_graph.models.spec import DEFAULT_MODEL, parse_model_spec

# ----------------------------------------------------------------------------- spec parsing


def test_spec_with_adapter_keeps_the_base_form():
    spec = parse_model_spec(f"{DEFAULT_MODEL}+outputs/run/train/adapter")
    assert (spec.kind, spec.target, spec.adapter, spec.backend) == ("offline", DEFAULT_MODEL, "outputs/run/train/adapter", None)
    spec = parse_model_spec("llamacpp:./base.gguf+./adapter")
    assert (spec.kind, spec.target, spec.adapter, spec.backend) == ("path", "./base.gguf", "./adapter", "llamacpp")
    spec = parse_model_spec("default+ad")
    assert (spec.kind, spec.target, spec.adapter) == ("offline", DEFAULT_MODEL, "ad")
    assert parse_model_spec(DEFAULT_MODEL).adapter is None


def test_openai_spec_is_not_split_on_plus():
    spec = parse_model_spec("openai:http://127.0.0.1:8000/v1#msft+v2")
    assert (spec.kind, spec.model, spec.adapter) == ("openai", "msft+v2", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{DEFAULT_MODEL}+", "BASE\\+ADAPTER_DIR"),
        (f"{DEFAULT_MODEL}+a+b", "one adapter per model"),
        ("nonsense-name+adapter", "Unknown model spec"),
    ],
)
def test_bad_adapter_specs_are_refused(text, message):
    with pytest.raises(ModelError, match=message):
        parse_model_spec(text)


# ----------------------------------------------------------------------------- tiny adapter

HIDDEN, LAYERS, RANK, ALPHA = 32, 2, 4, 8


@pytest.fixture(scope="module")
def tiny_adapter(tmp_path_factory):
    """A tiny Qwen2 and a LoRA adapter on every linear layer with non-zero B (peft starts B at 0)."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from finetune.training.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("adapter")
    base = build_tiny_model(root / "base", ["SELECT name FROM singer WHERE age > 30"] * 20, hidden_size=HIDDEN, layers=LAYERS)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = peft.LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    tuned = peft.get_peft_model(model, config)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in tuned.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn_like(param) * 0.5)
    tuned.save_pretrained(root / "adapter")
    return base, root / "adapter"


def _base_gguf(path: Path, arch: str = "qwen2", blocks: int = LAYERS) -> Path:
    """A GGUF header naming the architecture (all the converter reads from the base)."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(blocks)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_lora_gguf_holds_the_peft_weights_under_llamacpp_names(tiny_adapter, tmp_path, monkeypatch):
    gguf = pytest.importorskip("gguf")
    import numpy as np
    from safetensors.numpy import load_file

    from route_graph.models.adapters import lora_gguf

    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    _, adapter = tiny_adapter
    out = lora_gguf(adapter, _base_gguf(tmp_path / "base.gguf"))
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == ALPHA
    tensors = {t.name: np.asarray(t.data) for t in reader.tensors}
    kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    assert set(tensors) == {f"blk.{i}.{k}.weight.lora_{ab}" for i in range(LAYERS) for k in kinds for ab in "ab"}
    peft_weights = load_file(str(adapter / "adapter_model.safetensors"))
    a = peft_weights["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    b = peft_weights["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"]
    np.testing.assert_array_equal(tensors["blk.1.ffn_down.weight.lora_a"], a.astype(np.float16))
    np.testing.assert_array_equal(tensors["blk.1.ffn_down.weight.lora_b"], b.astype(np.float16))
    assert tensors["blk.0.attn_k.weight.lora_b"].shape == peft_weights[
        "base_model.model.model.layers.0.self_attn.k_proj.lora_B.weight"
    ].shape

    # Made once: a second call returns the cached file untouched.
    stamp = out.stat().st_mtime_ns
    assert lora_gguf(adapter, tmp_path / "base.gguf") == out and out.stat().st_mtime_ns == stamp


def test_llamacpp_conversion_refuses_what_llamacpp_would_apply_differently(tiny_adapter, tmp_path, monkeypatch):
    import shutil

    from route_graph.models.adapters import lora_gguf

    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    _, adapter = tiny_adapter
    dora = tmp_path / "dora"
    shutil.copytree(adapter, dora)
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ModelError, match="use_dora"):
        lora_gguf(dora, _base_gguf(tmp_path / "base.gguf"))
    with pytest.raises(ModelError, match="not a LoRA adapter directory"):
        lora_gguf(tmp_path, tmp_path / "base.gguf")
    with pytest.raises(ModelError, match="does not know the architecture"):
        lora_gguf(adapter, _base_gguf(tmp_path / "odd.gguf", arch="no-such-arch"))


def test_transformers_engine_runs_a_merge_made_once(tiny_adapter, tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from route_graph.models import load_chat_model

    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    base, adapter = tiny_adapter
    llm = load_chat_model(f"transformers:{base}+{adapter}")
    merged = Path(llm.model_path)
    assert merged.is_relative_to(tmp_path / "cache") and llm.model_name.endswith("+adapter")
    ids = torch.tensor([[1, 5, 9, 14, 3]])
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).eval()
    untuned = AutoModelForCausalLM.from_pretrained(base).eval()
    loaded = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    with torch.no_grad():
        want, got, before = reference(ids).logits, loaded(ids).logits, untuned(ids).logits
    assert not torch.allclose(want, before, atol=1e-2)  # the adapter matters ...
    torch.testing.assert_close(got, want, atol=5e-2, rtol=5e-2)  # ... and the merge (saved in bf16) carries it
    stamp = (merged / "model.safetensors").stat().st_mtime_ns
    assert Path(load_chat_model(f"transformers:{base}+{adapter}").model_path) == merged
    assert (merged / "model.safetensors").stat().st_mtime_ns == stamp


def test_gguf_adapter_on_a_directory_base_needs_the_transformers_engine(tiny_adapter):
    from route_graph.models import load_chat_model

    base, adapter = tiny_adapter
    with pytest.raises(ModelError, match="llama.cpp runs GGUF files"):
        load_chat_model(f"llamacpp:{base}+{adapter}")


# ----------------------------------------------------------------------------- real model


def _real_size_adapter(directory: Path, scale: float) -> Path:
    """A LoRA adapter with the default model's shapes (Qwen2.5-0.5B), written without loading it."""
    import numpy as np
    from safetensors.numpy import save_file

    hidden, kv, inter, rank = 896, 128, 4864, 8
    shapes = {
        "self_attn.q_proj": (hidden, hidden), "self_attn.k_proj": (hidden, kv), "self_attn.v_proj": (hidden, kv),
        "self_attn.o_proj": (hidden, hidden), "mlp.gate_proj": (hidden, inter), "mlp.up_proj": (hidden, inter),
        "mlp.down_proj": (inter, hidden),
    }
    rng = np.random.default_rng(0)
    tensors = {}
    for layer in (20, 21, 22, 23):
        for module, (d_in, d_out) in shapes.items():
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = (rng.standard_normal((rank, d_in)) * 0.05).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = (rng.standard_normal((d_out, rank)) * scale).astype(np.float32)
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"], "task_type": "CAUSAL_LM"})
    )
    return directory


@pytest.mark.slow
def test_llamacpp_applies_the_adapter_to_the_default_model(tmp_path):
    """A zero adapter leaves greedy answers as they were; a strong one changes them."""
    pytest.importorskip("llama_cpp", reason="CI installs llama-cpp-python with the [local] extra")
    from route_graph.models import load_chat_model
    from route_graph.models.engines.llamacpp_chat import LlamaCppChatModel

    question = [("system", "You write SQLite SQL."), ("human", "Table singer(name, age). Names of singers older than 30?")]
    base = load_chat_model(DEFAULT_MODEL, max_new_tokens=32).invoke(question).content  # the untuned base
    zero = load_chat_model(f"{DEFAULT_MODEL}+{_real_size_adapter(tmp_path / 'zero', 0.0)}", max_new_tokens=32)
    strong = load_chat_model(f"{DEFAULT_MODEL}+{_real_size_adapter(tmp_path / 'strong', 0.5)}", max_new_tokens=32)
    assert isinstance(zero, LlamaCppChatModel) and zero.lora_path and zero.engine() is not strong.engine()
    assert zero.model_name == f"{DEFAULT_MODEL}+zero"
    assert zero.invoke(question).content == base
    assert strong.invoke(question).content != base


def test_adapter_copy_casts_weights_and_records_the_base(tiny_adapter, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from finetune.training.export import copy_adapter

    _, adapter = tiny_adapter
    out = copy_adapter(adapter, tmp_path / "ship", dtype="bfloat16", base_model="Qwen/Qwen2.5-Coder-0.5B-Instruct")
    original, copied = load_file(str(adapter / "adapter_model.safetensors")), load_file(str(out / "adapter_model.safetensors"))
    assert original.keys() == copied.keys() and all(t.dtype == torch.bfloat16 for t in copied.values())
    name = next(iter(original))
    torch.testing.assert_close(copied[name].float(), original[name].float(), atol=1e-2, rtol=1e-2)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "Qwen/Qwen2.5-Coder-0.5B-Instruct" and config["r"] == RANK
    with pytest.raises(ModelError, match="not a LoRA adapter directory"):
        copy_adapter(tmp_path / "nothing", tmp_path / "x")
