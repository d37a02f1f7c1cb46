"""MSFT configuration files + overrides, task mixing, and the route-finetune CLI on a tiny split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from finetune.cli import main
from finetune.config import RunConfig, load_config
from finetune.data.records import Record, read_jsonl
from finetune.training.mixing import mix_records, task_quotas
from route_graph.errors import ConfigError
from tests.fakes import make_concert_db
from tests.test_finetune_synthesis import CONCERT_PAIRS

REPO = Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------- config
def test_defaults_and_overrides() -> None:
    cfg = load_config(None, ["train.max_steps=3", 'synth.tasks=["ts","nc"]', "route.link_sample_rows=2", "filter.judge_model=default", "limit=null"])
    assert isinstance(cfg, RunConfig)
    assert cfg.train.max_steps == 3 and cfg.synth.tasks == ["ts", "nc"]
    assert cfg.view_config().link_sample_rows == 2 and cfg.filter.judge_model == "default"
    assert cfg.train.method == "lora" and cfg.train.lora_r <= 16


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.nope=1", "unknown field"),
        ("train.max_steps=abc", "expected an integer"),
        ("train.method=qlora", "not one of"),
        ('synth.tasks=["xx"]', "unknown task"),
        ("route.bogus=1", "ViewConfig"),
        ("route.link_sample_rows=-1", "link_sample_rows"),
        ('train.task_ratios={"zz": 1}', "task_ratios"),
        ("train", "section.field=value"),
    ],
)
def test_bad_values_are_config_errors(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_json_and_yaml_files(tmp_path: Path) -> None:
    data = {"output_dir": "x", "train": {"lora_r": 8, "task_ratios": {"ts": 2, "sl": 1}}}
    (tmp_path / "c.json").write_text(json.dumps(data))
    (tmp_path / "c.yaml").write_text("output_dir: x\ntrain:\n  lora_r: 8\n  task_ratios: {ts: 2, sl: 1}\n")
    for name in ("c.json", "c.yaml"):
        cfg = load_config(tmp_path / name, ["train.lora_r=4"])
        assert cfg.output_dir == "x" and cfg.train.lora_r == 4 and cfg.train.task_ratios == {"ts": 2.0, "sl": 1.0}
    with pytest.raises(ConfigError, match="No config file"):
        load_config(tmp_path / "missing.json")


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.json")))
def test_shipped_configs_load(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert cfg.train.lora_r <= 16 and cfg.output_dir.startswith("outputs/")


# -------------------------------------------------------------------------------------- mixing
def _records(task: str, n: int) -> list[Record]:
    return [Record.of(task, "db", i, "v", [{"role": "user", "content": f"{task}{i}"}], "x") for i in range(n)]


def test_task_quotas() -> None:
    available = {"ts": 100, "sl": 50, "nc": 50, "cw": 50}
    assert task_quotas(available, None, None) == available
    assert task_quotas(available, None, 50) == {"cw": 10, "nc": 10, "sl": 10, "ts": 20}
    assert task_quotas(available, {"ts": 1, "sl": 1}, None) == {"sl": 50, "ts": 50}
    assert task_quotas(available, {"ts": 1}, 30) == {"ts": 30}
    assert sum(task_quotas(available, {"ts": 1, "sl": 1, "nc": 1}, 100).values()) == 100
    with pytest.raises(ConfigError, match="hold none"):
        task_quotas({"ts": 3}, {"sl": 1}, None)


def test_mix_skips_rejected_records_and_repeats_only_when_asked() -> None:
    records = _records("ts", 10) + _records("sl", 4)
    reject_odd = lambda r: None if r.example_id % 2 else r.example_id
    chosen, report = mix_records(records, {"ts": 1, "sl": 1}, 10, reject_odd, seed=0)
    assert report.quota == {"sl": 5, "ts": 5}
    assert report.taken == {"sl": 5, "ts": 5}
    assert report.repeated == {"sl": 3, "ts": 0}  # only 2 sl records survive: repeated to 5
    assert report.too_long["ts"] >= 1
    assert all(r.example_id % 2 == 0 for r, _ in chosen)
    again, _ = mix_records(records, {"ts": 1, "sl": 1}, 10, reject_odd, seed=0)
    assert [r for r, _ in again] == [r for r, _ in chosen]


def test_phase_slices_split_one_task_without_overlap() -> None:
    """Phase A takes max_records=N of the seeded order, phase B skip=N takes the rest: no overlap, nothing lost."""
    records = _records("ts", 23)
    keep = lambda r: r.example_id
    first, _ = mix_records(records, {"ts": 1}, 10, keep, seed=3)
    rest, report_b = mix_records(records, {"ts": 1}, None, keep, seed=3, skip=10)
    ids_a, ids_b = {r.example_id for r, _ in first}, {r.example_id for r, _ in rest}
    assert len(ids_a) == 10 and len(ids_b) == 13 and not ids_a & ids_b
    assert ids_a | ids_b == set(range(23))
    assert report_b.available == {"ts": 13}
    with pytest.raises(ConfigError, match="hold none"):  # a slice past the end is an error, not an empty phase
        mix_records(records, {"ts": 1}, None, keep, seed=3, skip=30)



def test_variant_keys_replay_one_view_without_moving_the_other_slice() -> None:
    """'ts/full_schema' draws from its own pool; the linked pool keeps the order a linked-only phase saw."""
    linked = [Record.of("ts", "db", i, "linked_schema", [{"role": "user", "content": f"l{i}"}], "x") for i in range(20)]
    full = [Record.of("ts", "db", i, "full_schema", [{"role": "user", "content": f"f{i}"}], "x") for i in range(20)]
    keep = lambda r: r.example_id
    phase_a, _ = mix_records(linked, {"ts": 1}, 8, keep, seed=1)  # a linked-only phase (no full view synthesized)
    both = [r for pair in zip(full, linked) for r in pair]  # synthesis with both views interleaves them
    phase_b, report = mix_records(both, {"ts/linked_schema": 4, "ts/full_schema": 1}, 10, keep, seed=1, skip=8)
    assert report.quota == {"ts/full_schema": 2, "ts/linked_schema": 8}
    new_linked = {r.example_id for r, _ in phase_b if r.variant == "linked_schema"}
    assert len(new_linked) == 8 and not new_linked & {r.example_id for r, _ in phase_a}
    assert sum(r.variant == "full_schema" for r, _ in phase_b) == 2
    # a plain 'ts' key pools both variants, as before
    _, pooled = mix_records(both, {"ts": 1}, 10, keep, seed=1)
    assert pooled.available == {"ts": 40}
    with pytest.raises(ConfigError, match="task/variant"):
        load_config(None, ['train.task_ratios={"sql/x": 1}'])


# -------------------------------------------------------------------------------------- CLI
@pytest.fixture()
def spider_dir(tmp_path: Path) -> Path:
    """A Spider-format split with a planted broken pair and its database folder."""
    root = tmp_path / "spider"
    make_concert_db((root / "database" / "concert").mkdir(parents=True) or root / "database" / "concert" / "concert.sqlite")
    pairs = [{"question": q, "query": sql, "db_id": "concert"} for q, sql, _ in CONCERT_PAIRS]
    pairs.append({"question": "Broken", "query": "SELECT x FROM nowhere", "db_id": "concert"})
    (root / "train.json").write_text(json.dumps(pairs))
    return root


def test_cli_filter_synth_chain(spider_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert main(["filter", "--data", str(spider_dir / "train.json"), "--output-dir", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["kept"] == len(CONCERT_PAIRS) and summary["by_reason"] == {"gold_error": 1}
    assert len(json.loads((out / "filter" / "filtered.json").read_text())) == len(CONCERT_PAIRS)

    assert main(["synth", "--data", str(spider_dir / "train.json"), "--output-dir", str(out), "--tasks", "ts,sl", "--set", "synth.ts_reduced_schema=false"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["by_task"] == {"sl": len(CONCERT_PAIRS), "ts": len(CONCERT_PAIRS)}
    assert summary["skip_reasons"] == {}  # the broken pair never reached synthesis
    records = list(read_jsonl(out / "data" / "records.jsonl"))
    assert len(records) == 2 * len(CONCERT_PAIRS)
    assert json.loads((out / "data" / "synth_report.json").read_text())["records_written"] == len(records)


def test_cli_run_until_synth_is_resumable(spider_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    args = ["run", "--data", str(spider_dir / "train.json"), "--output-dir", str(out), "--until", "synth", "--limit", "6"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    stamp = (out / "data" / "records.jsonl").stat().st_mtime_ns
    assert main(args) == 0  # second run reuses the finished steps
    captured = capsys.readouterr()
    assert "synth: reusing" in captured.err and json.loads(captured.out)["synth"]["by_task"] == first["synth"]["by_task"]
    assert (out / "data" / "records.jsonl").stat().st_mtime_ns == stamp
    assert json.loads((out / "run_config.json").read_text())["limit"] == 6


def test_cli_errors_are_messages_not_tracebacks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["synth", "--data", str(tmp_path / "missing.json"), "--output-dir", str(tmp_path)]) == 2
    assert "route-finetune: error:" in capsys.readouterr().err
    assert main(["train", "--output-dir", str(tmp_path), "--set", "train.nope=1"]) == 2
    assert "unknown field" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_cli_synth_on_a_bird_format_split_uses_evidence_as_hint(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "bird"
    make_concert_db((root / "train_databases" / "concert").mkdir(parents=True) or root / "train_databases" / "concert" / "concert.sqlite")
    shutil.copy(REPO / "tests" / "fixtures" / "concert_bird.json", root / "train.json")
    out = tmp_path / "records.jsonl"
    assert main(["synth", "--data", str(root / "train.json"), "--output-dir", str(tmp_path / "run"), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["by_task"] == {"cw": 2, "nc": 2, "sl": 2, "ts": 4}
    records = list(read_jsonl(out))
    assert all("Hint: French refers to country = 'France'" in r.prompt[-1]["content"] for r in records if r.example_id == 0)
    assert not any("Hint:" in r.prompt[-1]["content"] for r in records if r.example_id == 1)  # empty evidence
    assert (tmp_path / "records.report.json").is_file()
