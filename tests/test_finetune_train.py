"""CPU smoke training on a tiny Qwen2 built from a config (no download): completion-only labels,
LoRA and full fine-tuning change weights, checkpoints resume, the merged model reloads through
``load_chat_model`` and generates, and the CLI runs the whole pipeline."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from finetune.cli import main
from finetune.config import SynthConfig, TrainConfig
from finetune.data.records import Record, write_jsonl
from finetune.data.synthesis import Synthesizer, SynthReport
from finetune.training.encoding import IGNORE_INDEX, PadCollator, encode_record
from finetune.training.export import check_adapter, merge_adapter
from finetune.training.tiny import build_tiny_model
from finetune.training.train import train
from route_graph import RouteConfig
from route_graph.errors import ConfigError
from route_graph.sql.opening import open_database
from tests.fakes import make_concert_db
from tests.test_finetune_synthesis import CONCERT_PAIRS, concert_examples

# Small prompts keep the smoke runs quick: no sample rows in the schema text.
ROUTE = RouteConfig(link_sample_rows=0, generate_sample_rows=0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finetune")


@pytest.fixture(scope="module")
def records(workdir: Path) -> list[Record]:
    db = open_database(make_concert_db(workdir / "concert.sqlite"))
    synth = Synthesizer(ROUTE, SynthConfig(), seed=0)
    return list(synth.run(concert_examples(), lambda _: db, SynthReport()))


@pytest.fixture(scope="module")
def records_path(workdir: Path, records: list[Record]) -> Path:
    path = workdir / "records.jsonl"
    write_jsonl(records, path)
    return path


@pytest.fixture(scope="module")
def tiny(workdir: Path, records: list[Record]) -> Path:
    texts = [m["content"] for r in records for m in r.prompt + r.completion]
    return build_tiny_model(workdir / "tiny", texts, vocab_size=600)


def _tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()}


def test_labels_cover_only_the_completion(tiny: Path, records: list[Record]) -> None:
    tok = _tokenizer(tiny)
    record = next(r for r in records if r.task == "sl")
    encoded = encode_record(tok, record, max_length=4096)
    assert encoded is not None and len(encoded.labels) == len(encoded.input_ids)
    prompt_len = len(tok.apply_chat_template(record.prompt, add_generation_prompt=True, tokenize=True, return_dict=False))
    assert all(label == IGNORE_INDEX for label in encoded.labels[:prompt_len])
    learned = [t for t in encoded.labels if t != IGNORE_INDEX]
    assert tok.decode(learned) == record.answer + "<|im_end|>"  # the answer and the end of turn
    assert encoded.labels[-1] == IGNORE_INDEX  # ChatML's trailing newline is never generated
    # Length policy: drop, or cut (keeping only records that still have completion tokens).
    assert encode_record(tok, record, max_length=prompt_len + 2, truncation="drop") is None
    cut = encode_record(tok, record, max_length=prompt_len + 2, truncation="truncate")
    assert cut is not None and len(cut.input_ids) == prompt_len + 2 and cut.completion_tokens == 2
    assert encode_record(tok, record, max_length=prompt_len, truncation="truncate") is None
    batch = PadCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [5], "labels": [5]}])
    assert batch["input_ids"].shape == (2, 8) and batch["labels"][1].tolist() == [5] + [-100] * 7
    assert batch["attention_mask"][1].tolist() == [1] + [0] * 7


def test_lora_smoke_changes_weights_resumes_merges_and_reloads(tiny: Path, records_path: Path, workdir: Path) -> None:
    out = workdir / "lora"
    cfg = TrainConfig(
        base_model=str(tiny), max_steps=2, batch_size=2, learning_rate=1e-2, warmup_steps=0,
        max_records=16, max_length=1024, save_steps=1, logging_steps=1, task_ratios={"ts": 1, "sl": 1, "nc": 1, "cw": 1},
        checkpoint_dir=str(out / "checkpoints"),
    )
    first = train(records_path, out, cfg)
    assert first.steps == 2 and first.adapter_dir == out / "adapter" and first.finished
    summary = json.loads(first.summary_path.read_text())
    assert summary["mix"]["taken"] == {"cw": 4, "nc": 4, "sl": 4, "ts": 4}
    # Prefix groups (the default): 16 records of one database run as fewer, shared-prefix batches.
    assert 1 < summary["prefix_groups"] < 16 and summary["computed_tokens"] < summary["tokens"]
    assert summary["precision"] in ("bf16", "fp32") and summary["device"] == "cpu"
    losses = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in losses)
    assert (out / "checkpoints" / "checkpoint-2").is_dir()

    # Resume: a longer schedule continues from checkpoint-2 instead of starting over.
    cfg.max_steps = 3
    second = train(records_path, out, cfg)
    assert second.steps == 3
    assert json.loads(second.summary_path.read_text())["resumed_from"].endswith("checkpoint-2")

    adapter = check_adapter(out / "adapter")
    assert adapter["r"] == 16 and not adapter.get("modules_to_save") and adapter["task_type"] == "CAUSAL_LM"
    merged = merge_adapter(out / "adapter", workdir / "merged", dtype="float32")
    base, tuned = _weights(tiny), _weights(merged)
    assert base.keys() == tuned.keys()
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    assert not any("embed_tokens" in k or "lm_head" in k for k in changed)  # all-linear LoRA: no lm_head

    from route_graph.models import load_chat_model

    llm = load_chat_model(str(merged), max_new_tokens=8)
    reply = llm.invoke([{"role": "user", "content": CONCERT_PAIRS[0][0]}])
    assert isinstance(reply.content, str) and reply.usage_metadata["output_tokens"] >= 1


def test_full_fine_tuning_smoke(tiny: Path, records_path: Path, workdir: Path) -> None:
    result = train(
        records_path, workdir / "full",
        TrainConfig(base_model=str(tiny), method="full", max_steps=1, batch_size=2, learning_rate=1e-3,
                    warmup_steps=0, max_records=4, max_length=1024, task_ratios={"sl": 1}, resume=None,
                    prefix_groups=False, checkpoint_dir=str(workdir / "full" / "checkpoints")),
    )
    assert result.model_dir is not None and result.adapter_dir is None
    base, tuned = _weights(tiny), _weights(result.model_dir)
    assert any(not torch.equal(base[k], tuned[k]) for k in base)
    from route_graph.models import load_chat_model

    assert isinstance(load_chat_model(str(result.model_dir), max_new_tokens=4).invoke("hi").content, str)


def test_a_deadline_stops_with_a_checkpoint_and_the_same_call_continues(tiny: Path, records_path: Path, workdir: Path) -> None:
    out = workdir / "deadline"
    cfg = TrainConfig(
        base_model=str(tiny), max_steps=3, learning_rate=1e-2, warmup_steps=0, max_records=12, save_steps=100,
        logging_steps=1, task_ratios={"ts": 1, "sl": 1}, checkpoint_dir=str(out / "ckpt"), deadline="0s",
    )
    stopped = train(records_path, out, cfg)
    assert not stopped.finished and stopped.steps == 1 and stopped.adapter_dir is None
    assert (out / "ckpt" / "checkpoint-1").is_dir() and not (out / "adapter").exists()
    assert json.loads(stopped.summary_path.read_text())["finished"] is False

    cfg.deadline = None  # the same run, later: continues from checkpoint-1
    resumed = train(records_path, out, cfg)
    assert resumed.finished and resumed.steps == 3 and (out / "adapter").is_dir()
    assert json.loads(resumed.summary_path.read_text())["resumed_from"].endswith("checkpoint-1")


def test_checkpoints_of_another_run_are_refused(tiny: Path, records_path: Path, workdir: Path) -> None:
    out = workdir / "deadline"  # written by the test above with lora_r=16
    assert (out / "ckpt" / "run_key.json").is_file()
    other = TrainConfig(
        base_model=str(tiny), max_steps=3, learning_rate=1e-2, warmup_steps=0, max_records=12,
        task_ratios={"ts": 1, "sl": 1}, checkpoint_dir=str(out / "ckpt"), lora_r=8,
    )
    with pytest.raises(ConfigError, match="lora_r: 16 -> 8"):
        train(records_path, workdir / "other", other)
    other.checkpoint_dir, other.resume = str(workdir / "other_ckpt"), str(out / "ckpt" / "checkpoint-1")
    with pytest.raises(ConfigError, match="different training run"):
        train(records_path, workdir / "other", other)
    different_data = TrainConfig(
        base_model=str(tiny), max_steps=3, max_records=12, task_ratios={"ts": 1, "nc": 1}, checkpoint_dir=str(out / "ckpt"),
    )
    with pytest.raises(ConfigError, match="data.sha256"):
        train(records_path, workdir / "other", different_data)


def test_lora_on_the_top_layers_only_adapts_those(tiny: Path, records_path: Path, workdir: Path) -> None:
    out = workdir / "top"
    result = train(records_path, out, TrainConfig(
        base_model=str(tiny), max_steps=1, learning_rate=1e-2, warmup_steps=0, max_records=4,
        task_ratios={"ts": 1}, lora_top_layers=1, resume=None, checkpoint_dir=str(out / "ckpt"),
    ))
    merged = merge_adapter(result.adapter_dir, workdir / "top_merged", dtype="float32")
    base, tuned = _weights(tiny), _weights(merged)
    changed = {k for k in base if not torch.equal(base[k], tuned[k])}
    assert changed and all(".layers.1." in k for k in changed)  # the tiny model has layers 0 and 1
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)


def _adapter_weights(directory: Path) -> dict:
    from safetensors.torch import load_file

    return {k: v.float() for k, v in load_file(str(directory / "adapter_model.safetensors")).items()}


def test_a_phase_starts_from_a_committed_adapter_and_checks_its_data(tiny: Path, records_path: Path, workdir: Path) -> None:
    """train.init_adapter: phase 2 starts from phase 1's weights (not a fresh adapter); data_sha256 guards the data."""
    common = {"base_model": str(tiny), "learning_rate": 1e-2, "warmup_steps": 0, "max_records": 8,
              "task_ratios": {"ts": 1}, "lora_top_layers": 1, "resume": None}
    first = train(records_path, workdir / "phase1", TrainConfig(**common, max_steps=2, checkpoint_dir=str(workdir / "p1ck")))
    phase1 = _adapter_weights(first.adapter_dir)
    summary = json.loads(first.summary_path.read_text())
    assert len(summary["data_sha256"]) == 64 and summary["init_adapter"] is None

    # Zero steps from the adapter: what gets saved is the adapter itself (loaded, not re-initialised).
    frozen = {**common, "learning_rate": 0.0}
    start = TrainConfig(**frozen, max_steps=1, init_adapter=str(first.adapter_dir), checkpoint_dir=str(workdir / "p2ck0"))
    same = _adapter_weights(train(records_path, workdir / "phase2-lr0", start).adapter_dir)
    assert same.keys() == phase1.keys()
    assert all(torch.allclose(same[k], phase1[k]) for k in phase1)
    fresh = _adapter_weights(train(records_path, workdir / "fresh-lr0", TrainConfig(
        **frozen, max_steps=1, checkpoint_dir=str(workdir / "fresh0"))).adapter_dir)
    assert any(not torch.allclose(fresh[k], phase1[k]) for k in phase1)  # a fresh adapter is another start

    # Training on from it moves the weights, and the key records the starting adapter's hash.
    second = train(records_path, workdir / "phase2", TrainConfig(
        **common, max_steps=1, init_adapter=str(first.adapter_dir), data_sha256=summary["data_sha256"],
        checkpoint_dir=str(workdir / "p2ck")))
    assert any(not torch.allclose(_adapter_weights(second.adapter_dir)[k], phase1[k]) for k in phase1)
    assert json.loads(second.summary_path.read_text())["init_adapter"] == summary_sha(first.adapter_dir)

    with pytest.raises(ConfigError, match="synthesis or tokenizer differs"):
        train(records_path, workdir / "phase2-bad", TrainConfig(**common, max_steps=1, data_sha256="0" * 64,
                                                                checkpoint_dir=str(workdir / "p2bad")))
    with pytest.raises(ConfigError, match="another LoRA shape"):
        train(records_path, workdir / "phase2-r8", TrainConfig(**{**common, "lora_top_layers": None}, max_steps=1, lora_r=8,
                                                               init_adapter=str(first.adapter_dir), checkpoint_dir=str(workdir / "p2r8")))


def test_a_finished_phase_is_committed_in_bf16_and_the_next_phase_starts_from_it(tiny: Path, records_path: Path, workdir: Path) -> None:
    from safetensors import safe_open

    from finetune.training.phases import commit_phase

    common = {"base_model": str(tiny), "learning_rate": 1e-2, "warmup_steps": 0, "max_records": 8,
              "task_ratios": {"ts": 1}, "lora_top_layers": 1, "resume": None}
    run = workdir / "phase-a"
    train(records_path, run, TrainConfig(**common, max_steps=2, checkpoint_dir=str(workdir / "pa")))
    phase = commit_phase(run, workdir / "phases" / "1-a", config_path="configs/x.json", command="route-finetune run ...")
    assert sorted(p.name for p in phase.iterdir()) == ["PHASE.md", "adapter_config.json", "adapter_model.safetensors", "train_summary.json"]
    with safe_open(str(phase / "adapter_model.safetensors"), "pt") as weights:
        assert {str(weights.get_tensor(k).dtype) for k in weights.keys()} == {"torch.bfloat16"}
    text = (phase / "PHASE.md").read_text()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["data_sha256"] in text and "configs/x.json" in text and "loss" in text
    # The next phase loads the committed bf16 adapter and trains on (fp32 adapter weights again).
    nxt = train(records_path, workdir / "phase-b", TrainConfig(**common, max_steps=1, init_adapter=str(phase),
                                                               checkpoint_dir=str(workdir / "pb")))
    assert nxt.finished and json.loads(nxt.summary_path.read_text())["init_adapter"] == summary_sha(phase)
    # An unfinished run is refused.
    stopped = workdir / "phase-stopped"
    train(records_path, stopped, TrainConfig(**common, max_steps=3, deadline="0s", checkpoint_dir=str(workdir / "ps")))
    with pytest.raises(ConfigError, match="has not finished"):
        commit_phase(stopped, workdir / "phases" / "bad", config_path="c", command="c")
    # A destination git would skip on `git add` (the .gitignore that lost phase 1's weights) is refused.
    repo = workdir / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("*.safetensors\n")
    with pytest.raises(ConfigError, match="ignored by git"):
        commit_phase(run, repo / "finetune" / "phases" / "1-a", config_path="c", command="c")
    (repo / ".gitignore").write_text("*.safetensors\n!finetune/phases/*/adapter_model.safetensors\n")
    assert commit_phase(run, repo / "finetune" / "phases" / "1-a", config_path="c", command="c").is_dir()


def summary_sha(directory: Path) -> str:
    import hashlib

    return hashlib.sha256((directory / "adapter_model.safetensors").read_bytes()).hexdigest()


def test_adapters_vllm_cannot_serve_are_refused(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32, "modules_to_save": None}))
    with pytest.raises(ConfigError, match="rank 32"):
        check_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8, "modules_to_save": ["lm_head"]}))
    with pytest.raises(ConfigError, match="modules"):
        check_adapter(tmp_path)


def test_cli_run_end_to_end_on_the_tiny_model(tiny: Path, workdir: Path, capsys: pytest.CaptureFixture) -> None:
    split_dir = workdir / "spider"
    make_concert_db((split_dir / "database" / "concert").mkdir(parents=True) or split_dir / "database" / "concert" / "concert.sqlite")
    (split_dir / "train.json").write_text(json.dumps([{"question": q, "query": s, "db_id": "concert"} for q, s, _ in CONCERT_PAIRS]))
    out = workdir / "run"
    argv = [
        "run", "--data", str(split_dir / "train.json"), "--output-dir", str(out), "--base-model", str(tiny),
        "--max-steps", "1", "--batch-size", "2", "--max-records", "4",
        "--set", "route.link_sample_rows=0", "--set", "route.generate_sample_rows=0", "--set", "export.dtype=float32",
        "--set", f"train.checkpoint_dir={out / 'ckpt'}",
    ]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kept"] == len(CONCERT_PAIRS) and summary["exported"] == str(out / "merged")
    assert (out / "merged" / "model.safetensors").is_file() and (out / "merged" / "chat_template.jinja").is_file()
    assert main(["export", "--output-dir", str(out), "--check-only"]) == 0
    assert json.loads(capsys.readouterr().out)["servable_by_vllm"] is True
