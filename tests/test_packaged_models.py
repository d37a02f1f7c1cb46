"""Packaged tuned models: a packaged name parses to its offline base plus the installed adapter,
'default' follows DEFAULT_SPEC, a broken install says so, and llama.cpp runs a shipped adapter's
prebuilt LoRA GGUF without converting it (no torch) only while it matches the base and the files.
No model runs: the bases are GGUF headers, the adapters a few random tensors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from route_graph.errors import ConfigError, ModelError
from route_graph.models import adapters, packaged
from route_graph.models.cache import OFFLINE_MODELS
from route_graph.models.packaged import PackagedModel, packaged_adapter_dir
from route_graph.models.spec import DEFAULT_MODEL, ModelSpec, parse_model_spec

NAME = "route-test"
LAYERS, HIDDEN, RANK = 2, 16, 2


@pytest.fixture
def registry(monkeypatch, tmp_path):
    """A registry with one packaged model whose folder is tmp_path/adapters_data/route-test (not yet written)."""
    monkeypatch.setattr(packaged, "ADAPTERS_DATA", tmp_path / "adapters_data")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, NAME, PackagedModel(NAME, base=DEFAULT_MODEL, folder=NAME))
    return tmp_path / "adapters_data" / NAME


@pytest.fixture
def tuned_default(registry, monkeypatch):
    monkeypatch.setattr(packaged, "DEFAULT_SPEC", NAME)
    return registry


@pytest.fixture
def untuned_default(registry, monkeypatch):
    """The registry with the untuned base as the default (a fork that has not shipped an adapter)."""
    monkeypatch.setattr(packaged, "DEFAULT_SPEC", DEFAULT_MODEL)
    return registry


def _tiny_adapter(directory: Path, seed: int = 0) -> Path:
    """A PEFT-style LoRA adapter (safetensors + config) on a 2-layer Qwen2-shaped model, written with numpy."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(LAYERS):
        for module in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj"):
            key = f"base_model.model.model.layers.{layer}.{module}"
            tensors[f"{key}.lora_A.weight"] = rng.standard_normal((RANK, HIDDEN)).astype(np.float32)
            tensors[f"{key}.lora_B.weight"] = rng.standard_normal((HIDDEN, RANK)).astype(np.float32)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    (directory / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": RANK, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    ))
    return directory


def _base_gguf(path: Path, blocks: int = LAYERS) -> Path:
    """A GGUF header naming the architecture (all the converter reads from the base)."""
    gguf = pytest.importorskip("gguf")
    writer = gguf.GGUFWriter(str(path), "qwen2")
    writer.add_block_count(blocks)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def converter():
    """The tiny adapter and base, where conversion works (gguf, safetensors and torch installed)."""
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    pytest.importorskip("safetensors")


def _no_conversion(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the adapter was converted although a matching adapter.gguf ships with it")

    monkeypatch.setattr(adapters, "_write_lora_gguf", refuse)


# ----------------------------------------------------------------------------- spec parsing


def test_a_packaged_name_parses_to_its_base_plus_the_installed_adapter(registry):
    adapter = str(registry)
    assert parse_model_spec(NAME) == ModelSpec("offline", DEFAULT_MODEL, adapter=adapter, packaged=NAME)
    assert parse_model_spec(" Route-Test ") == parse_model_spec(NAME)
    assert parse_model_spec(f"llamacpp:{NAME}") == ModelSpec(
        "offline", DEFAULT_MODEL, backend="llamacpp", adapter=adapter, packaged=NAME
    )
    scaled = parse_model_spec(f"transformers:{NAME}@0.75")
    assert (scaled.backend, scaled.adapter, scaled.adapter_scale, scaled.packaged) == ("transformers", adapter, 0.75, NAME)
    assert not registry.exists()  # parsing built the path and read nothing


def test_default_follows_default_spec_and_the_base_name_stays_untuned(tuned_default):
    tuned = ModelSpec("offline", DEFAULT_MODEL, adapter=str(tuned_default), packaged=NAME)
    for spec in (None, "", "default", " DEFAULT "):
        assert parse_model_spec(spec) == tuned
    assert parse_model_spec("llamacpp:default").backend == "llamacpp"
    assert parse_model_spec("default@0.5").adapter_scale == 0.5
    assert parse_model_spec(DEFAULT_MODEL) == ModelSpec("offline", DEFAULT_MODEL)
    # 'default+ADAPTER' puts the adapter on the default's base weights, as it did before
    assert parse_model_spec("default+my/adapter") == ModelSpec("offline", DEFAULT_MODEL, adapter="my/adapter")


def test_an_untuned_default_takes_no_scale(untuned_default):
    assert parse_model_spec(None) == ModelSpec("offline", DEFAULT_MODEL)
    with pytest.raises(ModelError, match="Unknown model spec"):
        parse_model_spec(f"{DEFAULT_MODEL}@0.75")  # a scale needs an adapter
    with pytest.raises(ModelError, match="Unknown model spec"):
        parse_model_spec("default@0.75")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (f"{NAME}@9", "between 0 and 4"),
        (f"{NAME}+other/adapter", f"put yours on the base instead: '{DEFAULT_MODEL}\\+other/adapter'"),
        (f"llamacpp:{NAME}+a@0.5", "already its base plus an adapter"),
    ],
)
def test_bad_packaged_specs_are_refused(registry, spec, message):
    with pytest.raises(ModelError, match=message):
        parse_model_spec(spec)


def test_a_default_spec_naming_nothing_says_what_to_set(registry, monkeypatch):
    monkeypatch.setattr(packaged, "DEFAULT_SPEC", "route-typo")
    with pytest.raises(ModelError, match="DEFAULT_SPEC is 'route-typo'.*route-test"):
        parse_model_spec(None)


def test_spec_forms_list_the_packaged_models_and_the_default(tuned_default):
    from route_graph.models.spec import _default_forms

    forms = _default_forms()
    assert f"'default' (offline default model, '{NAME}')" in forms
    assert f"'{DEFAULT_MODEL}' (its untuned base)" in forms and f"'{NAME}@0.75'" in forms


def test_the_shipped_registry_is_consistent():
    """What a later step edits: each entry runs on an offline base, and its folder is installed."""
    for name, model in packaged.PACKAGED_MODELS.items():
        assert name == model.name == name.lower() and name not in OFFLINE_MODELS and name != "default"
        assert model.base in OFFLINE_MODELS
        directory = packaged_adapter_dir(name)
        assert (directory / "adapter.gguf").is_file() and (directory / "adapter_gguf.json").is_file(), (
            f"{name}: run route-finetune ship so llama.cpp needs no torch"
        )
    assert packaged.DEFAULT_SPEC in OFFLINE_MODELS or packaged.DEFAULT_SPEC in packaged.PACKAGED_MODELS
    default = parse_model_spec(None)
    if packaged.DEFAULT_SPEC in packaged.PACKAGED_MODELS:  # a shipped default runs its installed adapter
        assert default.packaged == packaged.DEFAULT_SPEC and default.adapter == str(packaged_adapter_dir(default.packaged))


# ----------------------------------------------------------------------------- a broken install


def test_a_missing_adapter_folder_says_to_reinstall(registry):
    with pytest.raises(ModelError, match="incomplete: adapter_config.json, adapter_model.safetensors missing.*Reinstall"):
        packaged_adapter_dir(NAME)
    _tiny_adapter(registry)
    (registry / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelError, match="adapter_model.safetensors missing"):
        packaged_adapter_dir(NAME)
    with pytest.raises(ModelError, match="Unknown packaged model 'route-nothing'"):
        packaged_adapter_dir("route-nothing")


def test_loading_a_broken_install_fails_before_any_engine_work(registry, monkeypatch):
    from route_graph.models import loading

    monkeypatch.setattr(loading, "ensure_offline_gguf", lambda name: pytest.fail("assembled the base first"))
    with pytest.raises(ModelError, match="packaged model 'route-test' is incomplete"):
        loading.load_chat_model(f"llamacpp:{NAME}")


# ----------------------------------------------------------------------------- prebuilt adapter.gguf


def test_write_adapter_gguf_records_the_base_and_the_adapter_files(converter, tmp_path):
    gguf = pytest.importorskip("gguf")
    adapter, base = _tiny_adapter(tmp_path / "adapter"), _base_gguf(tmp_path / "base.gguf")
    out = adapters.write_adapter_gguf(adapter, base, base_name="tiny-base")
    assert out == adapter.resolve() / "adapter.gguf"
    record = json.loads((adapter / "adapter_gguf.json").read_text())
    assert record == {
        "format": 1,
        "base": "tiny-base",
        "base_sha256": hashlib.sha256(base.read_bytes()).hexdigest(),
        "base_size": base.stat().st_size,
        "adapter_key": adapters.adapter_key(adapter),
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
    }
    reader = gguf.GGUFReader(str(out))
    assert reader.fields["general.type"].contents() == "adapter"
    assert {t.name for t in reader.tensors} >= {"blk.1.attn_q.weight.lora_a", "blk.0.ffn_down.weight.lora_b"}
    assert not list(adapter.glob("*.tmp"))


def test_a_matching_prebuilt_gguf_is_used_without_conversion(converter, tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    adapter, base = _tiny_adapter(tmp_path / "adapter"), _base_gguf(tmp_path / "base.gguf")
    prebuilt = adapters.write_adapter_gguf(adapter, base)
    _no_conversion(monkeypatch)
    assert adapters.lora_gguf(adapter, base) == prebuilt
    assert adapters.prebuilt_lora_gguf(adapter, base) == prebuilt
    assert not (tmp_path / "cache").exists()  # nothing converted into the cache


def test_a_prebuilt_gguf_for_another_base_or_other_files_is_ignored(converter, tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    adapter, base = _tiny_adapter(tmp_path / "adapter"), _base_gguf(tmp_path / "base.gguf")
    prebuilt = adapters.write_adapter_gguf(adapter, base)
    other_base = _base_gguf(tmp_path / "other.gguf", blocks=LAYERS + 1)
    assert adapters.prebuilt_lora_gguf(adapter, other_base) is None
    converted = adapters.lora_gguf(adapter, other_base)  # converted as before, into the cache
    assert converted != prebuilt and converted.is_relative_to(tmp_path / "cache")

    _no_conversion(monkeypatch)
    with pytest.raises(AssertionError, match="was converted"):
        adapters.lora_gguf(adapter, _base_gguf(tmp_path / "third.gguf", blocks=LAYERS + 2))
    _tiny_adapter(adapter, seed=1)  # retrained in place: the shipped conversion is stale
    with pytest.raises(AssertionError, match="was converted"):
        adapters.lora_gguf(adapter, base)


def test_a_corrupt_prebuilt_gguf_is_ignored_and_the_error_says_why(tmp_path, monkeypatch):
    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    adapter, base = _tiny_adapter(tmp_path / "adapter"), _base_gguf(tmp_path / "base.gguf")
    (adapter / "adapter.gguf").write_bytes(b"GGUF truncated")
    record = {"format": 1, "base": "b", "base_sha256": hashlib.sha256(base.read_bytes()).hexdigest(),
              "base_size": base.stat().st_size, "adapter_key": adapters.adapter_key(adapter), "sha256": "0" * 64}
    (adapter / "adapter_gguf.json").write_text(json.dumps(record))
    assert adapters.prebuilt_lora_gguf(adapter, base) is None

    def no_torch(*args, **kwargs):
        raise ModelError("Converting a LoRA adapter for llama.cpp needs gguf, safetensors and torch")

    monkeypatch.setattr(adapters, "_write_lora_gguf", no_torch)
    with pytest.raises(ModelError, match="needs .* torch .*Converting because adapter.gguf .* is corrupt"):
        adapters.lora_gguf(adapter, base)


def test_an_offline_base_is_identified_by_its_verification_marker_not_rehashed(tmp_path, monkeypatch):
    from route_graph.models.cache import verified_gguf_sha256

    spec = OFFLINE_MODELS[DEFAULT_MODEL]
    folder = tmp_path / "models" / spec.name
    folder.mkdir(parents=True)
    base = folder / f"{spec.name}.gguf"
    with open(base, "wb") as handle:  # sparse: the right size, instantly
        handle.truncate(spec.size)
    assert verified_gguf_sha256(base) is None  # not verified yet: callers hash it
    (folder / f"{spec.name}.json").write_text(json.dumps({"name": spec.name, "sha256": spec.sha256}))
    assert verified_gguf_sha256(base) == spec.sha256
    assert verified_gguf_sha256(tmp_path / "some.gguf") is None

    real_sha256 = adapters._sha256
    monkeypatch.setattr(adapters, "_sha256", lambda path: pytest.fail(f"hashed {path}") if path == base else real_sha256(path))
    assert adapters.gguf_sha256(base) == spec.sha256

    # and a shipped adapter.gguf recorded for that base is used on it, with no 400 MB hash
    adapter = _tiny_adapter(tmp_path / "adapter")
    (adapter / "adapter.gguf").write_bytes(b"GGUF adapter bytes")
    (adapter / "adapter_gguf.json").write_text(json.dumps({
        "format": 1, "base": spec.name, "base_sha256": spec.sha256, "base_size": spec.size,
        "adapter_key": adapters.adapter_key(adapter), "sha256": hashlib.sha256(b"GGUF adapter bytes").hexdigest(),
    }))
    _no_conversion(monkeypatch)
    assert adapters.lora_gguf(adapter, base) == adapter.resolve() / "adapter.gguf"


# ----------------------------------------------------------------------------- shipping


def test_ship_writes_the_package_folder_and_llamacpp_runs_it_unconverted(converter, registry, tmp_path, monkeypatch, capsys):
    from finetune import cli
    from finetune.training import ship
    from route_graph.models import loading

    monkeypatch.setenv("ROUTE_GRAPH_CACHE", str(tmp_path / "cache"))
    source = _tiny_adapter(tmp_path / "phases" / "9z-test")
    (source / "PHASE.md").write_text("# Phase: 9z-test\n\nTrained for this test.\n")
    base = _base_gguf(tmp_path / "base.gguf")
    monkeypatch.setattr(ship, "ensure_offline_gguf", lambda name: base if name == DEFAULT_MODEL else pytest.fail(name))

    assert cli.main(["ship", "--adapter", str(source), "--name", NAME, "--to", str(registry)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["files"] == ["README.md", "adapter.gguf", "adapter_config.json", "adapter_gguf.json", "adapter_model.safetensors"]
    assert printed["register"].startswith(f'PackagedModel("{NAME}", base="{DEFAULT_MODEL}", folder="{NAME}"')
    assert printed["make_default"].startswith(f'DEFAULT_SPEC = "{NAME}"') and "note" not in printed
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        assert (registry / file).read_bytes() == (source / file).read_bytes()
    assert "Trained for this test." in (registry / "README.md").read_text()
    assert json.loads((registry / "adapter_gguf.json").read_text())["base"] == DEFAULT_MODEL

    # The packaged model loads on llama.cpp with the shipped GGUF: no conversion, named as shipped.
    _no_conversion(monkeypatch)
    monkeypatch.setattr(loading, "ensure_offline_gguf", lambda name: base)
    llm = loading.load_chat_model(f"llamacpp:{NAME}@0.5")
    assert (llm.lora_path, llm.lora_scale, llm.model_name) == (str(registry.resolve() / "adapter.gguf"), 0.5, NAME)


def test_ship_refuses_names_that_would_shadow_other_specs(tmp_path):
    from finetune.training.ship import ship_adapter

    for name in ("default", DEFAULT_MODEL, "Route-0.5B", "llamacpp", "a+b"):
        with pytest.raises(ConfigError, match="cannot name a packaged model"):
            ship_adapter(tmp_path, name)
    with pytest.raises(ConfigError, match="offline model"):
        ship_adapter(tmp_path, "route-x", base="hf:Qwen/Qwen2.5-Coder-0.5B-Instruct")


# ----------------------------------------------------------------------------- labels and training


def test_report_labels_name_the_packaged_default(tuned_default):
    from route_graph.evaluation.report import model_label

    assert model_label(NAME) == f"{NAME} (offline default)"
    assert model_label(f"llamacpp:{NAME}@0.75") == f"{NAME}@0.75"
    assert model_label(DEFAULT_MODEL) == "Qwen2.5-Coder-0.5B-Instruct"
    # a record holding None/'default' predates concrete records: it ran the untuned base
    assert model_label(None) == model_label("default") == "Qwen2.5-Coder-0.5B-Instruct"


def test_runs_record_the_concrete_model_and_resume_legacy_default_records(tuned_default, tmp_path):
    from route_graph.evaluation.runner import EvalSettings, _check_resume
    from route_graph.models.spec import concrete_spec

    assert concrete_spec(None) == concrete_spec("default") == NAME
    assert concrete_spec("llamacpp:default") == f"llamacpp:{NAME}"
    assert concrete_spec(DEFAULT_MODEL) == DEFAULT_MODEL
    assert concrete_spec("./x+y@0.5") == "./x+y@0.5"

    class _Dataset:
        split_path, format, examples = tmp_path / "valid.json", "spider", []

    settings = EvalSettings(data=None, split="valid.json", model=None)
    record = settings.record(_Dataset())
    assert record["model"] == NAME
    # a run recorded as 'default' before: it ran the untuned base, so it resumes with that, not the new default
    legacy = {**record, "model": "default"}
    (tmp_path / "run.json").write_text(json.dumps({"settings": legacy, "sessions": []}))
    assert _check_resume(tmp_path, {**record, "model": DEFAULT_MODEL}, overwrite=False) == []
    with pytest.raises(ConfigError, match="different settings"):
        _check_resume(tmp_path, record, overwrite=False)


def test_report_labels_the_untuned_default_as_before(untuned_default):
    from route_graph.evaluation.report import model_label

    assert model_label(None) == "Qwen2.5-Coder-0.5B-Instruct (offline default)"
    assert model_label(NAME) == NAME


def test_training_starts_from_the_untuned_base_whatever_the_default(tuned_default, monkeypatch):
    from finetune.training.train import resolve_base_model
    from route_graph.models import loading

    monkeypatch.setattr(loading, "ensure_default_model", lambda name: Path("/converted") / name)
    assert resolve_base_model(None) == str(Path("/converted") / DEFAULT_MODEL)
    with pytest.raises(ModelError, match="train.init_adapter"):
        resolve_base_model(NAME)
