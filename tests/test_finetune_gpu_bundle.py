"""The GPU path on CPU with a tiny Qwen2 (no download): a bundle made here trains in a separate
process that cannot import route_graph or finetune, from a GGUF (read with the bundle's own gguf
package) or an HF directory, and the adapter it returns in parts loads with peft and
``load_chat_model``. Also: the shards hold exactly what ``finetune.training.encoding`` makes, damaged or
missing chunks are refused, a deadline still yields an adapter, and sends fit the call limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
gguf = pytest.importorskip("gguf")

from finetune.config import SynthConfig, TrainConfig
from finetune.data.records import Record
from finetune.data.synthesis import Synthesizer, SynthReport
from finetune.gpu.bundle import (
    CALL_LIMIT_BYTES,
    build_bundle,
    collect_adapter,
    send_plan,
)
from finetune.gpu.train import MANIFEST, BundleError, load_examples, read_manifest
from finetune.training.encoding import encode_record
from finetune.training.mixing import mix_records
from finetune.training.tiny import build_tiny_model
from route_graph import RouteConfig
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db
from tests.test_finetune_synthesis import concert_examples

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "finetune" / "gpu" / "train.py"
MIB = 1 << 20
# The device has none of these: the training process must not need them.
NOT_ON_THE_DEVICE = ("route_graph", "finetune", "langchain", "langchain_core", "langgraph", "datasets")


def _cfg(**changes) -> TrainConfig:
    base = {"max_steps": 2, "batch_size": 2, "grad_accum": 2, "learning_rate": 1e-2, "warmup_steps": 0, "max_records": 12,
            "max_length": 1024, "task_ratios": {"ts": 1, "sl": 1, "nc": 1, "cw": 1}, "seed": 3}
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gpu_bundle")


@pytest.fixture(scope="module")
def records(workdir: Path) -> list[Record]:
    db = open_database(make_concert_db(workdir / "concert.sqlite"))
    synth = Synthesizer(RouteConfig(link_sample_rows=0, generate_sample_rows=0), SynthConfig(), seed=0)
    return list(synth.run(concert_examples(), lambda _: db, SynthReport()))


@pytest.fixture(scope="module")
def tiny(workdir: Path, records: list[Record]) -> Path:
    texts = [m["content"] for r in records for m in r.prompt + r.completion]
    return build_tiny_model(workdir / "tiny", texts, vocab_size=600)


def _write_gguf(hf_dir: Path, path: Path) -> Path:
    """The tiny model as an f32 GGUF under llama.cpp's tensor names (the gguf package's map),
    with the header fields transformers reads: a stand-in for the offline Q4 GGUF."""
    import numpy as np
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    c = model.config
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    rope = getattr(c, "rope_theta", None) or c.rope_parameters["rope_theta"]
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    vocab = AutoTokenizer.from_pretrained(hf_dir).get_vocab()
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])])
    writer.add_token_types([1] * len(vocab))
    writer.add_eos_token_id(c.eos_token_id)
    writer.add_bos_token_id(c.bos_token_id)
    writer.add_pad_token_id(c.pad_token_id)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN2, c.num_hidden_layers)
    for key, tensor in model.state_dict().items():
        writer.add_tensor(names.get_name(key, try_suffixes=(".weight", ".bias")), tensor.numpy().astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _device_run(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    """finetune/gpu/train.py in a fresh process where the packages the device lacks cannot be imported."""
    block = "; ".join(f"sys.modules[{name!r}] = None" for name in NOT_ON_THE_DEVICE)
    code = (
        f"import runpy, sys; {block}; sys.path.insert(0, {str(SCRIPT.parent)!r}); "  # as `python3 finetune/gpu/train.py`
        f"sys.argv = {[str(SCRIPT), '--bundle', str(bundle), *args]!r}; "
        f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(bundle.parent), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", code], check=False, cwd=bundle.parent, env=env, capture_output=True, text=True, timeout=600)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def gguf_run(workdir: Path, tiny: Path, records: list[Record]) -> dict:
    """A bundle with a GGUF base in 64 KiB chunks, trained for 2 steps, and its collected adapter."""
    base = _write_gguf(tiny, workdir / "tiny.gguf")
    bundle = workdir / "gguf" / ".gpu_bundle"
    build_bundle(records, bundle, _cfg(), base_model=str(base), tokenizer=tiny, chunk_bytes=64 * 1024)
    out = workdir / "gguf" / "OUT"
    done = _device_run(bundle, "--out", str(out), "--minutes", "30")
    assert done.returncode == 0, done.stderr[-3000:]
    adapter = collect_adapter(out, workdir / "gguf" / "adapter", bundle=bundle)
    return {"bundle": bundle, "out": out, "adapter": adapter, "base": base, "stdout": done.stdout}


def test_a_gguf_bundle_trains_standalone_and_its_adapter_loads(gguf_run: dict, tiny: Path, workdir: Path, monkeypatch) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    bundle, out, adapter = gguf_run["bundle"], gguf_run["out"], gguf_run["adapter"]
    manifest = read_manifest(bundle)
    assert manifest["base"]["kind"] == "gguf" and len(manifest["base"]["chunks"]) > 1
    joined = bundle / "base" / "tiny.gguf"
    assert joined.read_bytes() == gguf_run["base"].read_bytes()  # the chunks join to the very file

    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["finished"] and summary["steps"] == summary["total_steps"] == 2
    assert summary["examples"] == 8 and summary["device"] == "cpu"  # 2 steps x 2 micro-batches x 2 records
    assert summary["gguf_module"].startswith(str((bundle / "meta" / "pylib").resolve()))  # the bundled copy
    assert len(summary["loss_curve"]) == 2 and all(loss > 0 for _, loss, _ in summary["loss_curve"])
    assert json.loads(gguf_run["stdout"])["steps"] == 2
    assert len([p for p in out.iterdir()]) <= 8  # what the device hands back, at most 8 files

    # The collected adapter: bf16 weights, the bundle's tokenizer, peft changes the base's logits.
    from safetensors.torch import load_file

    assert all(t.dtype == torch.bfloat16 for t in load_file(str(adapter / "adapter_model.safetensors")).values())
    assert (adapter / "tokenizer_config.json").is_file()
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["r"] == 16 and config["target_modules"] and not config.get("modules_to_save")
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 5, 9, 14, 3, 7]])
    before = _logits(base, ids)
    tuned = PeftModel.from_pretrained(base, str(adapter)).eval()
    assert not torch.allclose(_logits(tuned, ids), before, atol=1e-3)

    from route_graph.models import load_chat_model

    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(workdir / "cache"))
    llm = load_chat_model(f"transformers:{tiny}+{adapter}", max_new_tokens=4)
    assert isinstance(llm.invoke("hi").content, str)


def test_the_shards_hold_what_finetune_encoding_makes(gguf_run: dict, tiny: Path, records: list[Record]) -> None:
    from transformers import AutoTokenizer

    bundle = gguf_run["bundle"]
    manifest = read_manifest(bundle)
    examples = load_examples(bundle, manifest)
    cfg = _cfg()
    tok = AutoTokenizer.from_pretrained(tiny)
    chosen, _ = mix_records(records, cfg.task_ratios, cfg.max_records,
                            lambda r: encode_record(tok, r, cfg.max_length, cfg.truncation), seed=cfg.seed)
    assert len(examples) == len(chosen) == 12
    for example, (record, encoded) in zip(examples, chosen):
        assert example.input_ids.tolist() == encoded.input_ids
        assert example.labels == encoded.labels
        assert example.task == record.task
    assert manifest["data"]["tokens"] == sum(len(e.input_ids) for e in examples)
    lora = manifest["lora"]
    assert (lora["r"], lora["lora_alpha"], lora["target_modules"]) == (16, 32, "all-linear")
    assert manifest["train"]["grad_accum"] == 2 and manifest["train"]["seed"] == 3


def test_damaged_or_missing_chunks_are_refused(workdir: Path, tiny: Path, records: list[Record]) -> None:
    bundle = workdir / "broken" / ".gpu_bundle"
    build_bundle(records, bundle, _cfg(max_records=4), base_model=str(tiny), chunk_bytes=64 * 1024)
    manifest = read_manifest(bundle)
    assert manifest["base"]["kind"] == "hf_dir" and manifest["pylib"] is None
    chunk = bundle / manifest["base"]["chunks"][1]
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))
    check = _device_run(bundle, "--check")
    assert check.returncode == 2 and "sha256 mismatch" in check.stderr and "part-01" in check.stderr
    train = _device_run(bundle, "--out", str(workdir / "broken" / "OUT"))
    assert train.returncode == 2 and "corrupt" in train.stderr
    assert not (workdir / "broken" / "OUT" / "adapter_manifest.json").exists()

    chunk.unlink()  # not sent yet: reported as missing, training waits for it
    check = _device_run(bundle, "--check")
    assert check.returncode == 0 and json.loads(check.stdout) == {
        "present": [u for u in manifest["units"] if u != "part-01"], "missing": ["part-01"], "complete": False}
    train = _device_run(bundle, "--out", str(workdir / "broken" / "OUT"))
    assert train.returncode == 2 and "part-01" in train.stderr


def test_a_deadline_still_returns_an_adapter(workdir: Path, tiny: Path, records: list[Record]) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    bundle = workdir / "deadline" / ".gpu_bundle"
    build_bundle(records, bundle, _cfg(max_records=4), base_model=str(tiny))
    out = workdir / "deadline" / "OUT"
    done = _device_run(bundle, "--out", str(out), "--minutes", "0")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["stopped_at_deadline"] and not summary["finished"] and summary["steps"] < summary["total_steps"]
    adapter = collect_adapter(out, workdir / "deadline" / "adapter", bundle=bundle)
    base = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    assert PeftModel.from_pretrained(base, str(adapter)) is not None

    # A damaged part on the way back is refused too.
    record = json.loads((out / "adapter_manifest.json").read_text())
    part = out / record["parts"][0]["name"]
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        collect_adapter(out, workdir / "deadline" / "adapter2", bundle=bundle)


def test_the_send_plan_fits_each_call(workdir: Path, tmp_path: Path) -> None:
    """Units packed under 64 MiB with the working tree, meta first, training last."""
    bundle = tmp_path / ".gpu_bundle"
    sizes = {"meta": 1 * MIB, "data-00": 5 * MIB, **{f"part-{i:02d}": 60 * MIB for i in range(7)}, "part-07": 48 * MIB}
    files, units = {}, {}
    for unit, size in sizes.items():
        name = f"{unit}/f"
        files[name], units[unit] = {"size": size, "sha256": "0"}, [name]
    (bundle / "meta").mkdir(parents=True)
    (bundle / MANIFEST).write_text(json.dumps({"units": units, "files": files}))
    calls = send_plan(bundle, minutes=8, repo=tmp_path, tree_bytes=2 * MIB)
    assert len(calls) == 8 and calls[0].carry[0] == ".gpu_bundle/meta"
    assert sorted(c for call in calls for c in call.carry) == sorted(f".gpu_bundle/{u}" for u in units)
    assert all(call.carried_bytes + 2 * MIB <= CALL_LIMIT_BYTES for call in calls)
    assert all("--check" in call.command for call in calls[:-1])
    assert '--out "$OUT" --minutes 8' in calls[-1].command and calls[-1].timeout_s <= 600
    with pytest.raises(Exception, match="smaller chunk"):
        send_plan(bundle, repo=tmp_path, tree_bytes=6 * MIB)
    shutil.rmtree(bundle)
