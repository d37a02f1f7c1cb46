"""benchmarks/ablation.py end to end on the tiny fixture dataset, with the scripted model."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests.test_eval_runner import data, model  # noqa: F401  (pytest fixture + model factory)

ABLATION = Path(__file__).resolve().parents[1] / "benchmarks" / "ablation.py"


def load_ablation():
    spec = importlib.util.spec_from_file_location("route_graph_ablation", ABLATION)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_ablation_script(data: Path, tmp_path: Path) -> None:  # noqa: F811
    ablation = load_ablation()
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    argv = ["--data", str(data), "--split", "dev.json", "--limit", "6", "--concurrency", "2",
            "--throughput-n", "3", "--variants", "nc,cw", "--out", str(tmp_path / "runs"),
            "--results", str(results), "--no-progress", "--no-plots"]
    assert ablation.main(argv, llm=model()) == 0
    section = (tmp_path / "runs" / "ablation.md").read_text()
    for text in ("### EX by variant", "single-pass (measured)", "+SL+NC+CW (full MCP)", "stages nc,cw",
                 "### Is the difference real?", "Run-to-run noise", "### Per-stage attribution",
                 "### Schema linking", "### Throughput: batched vs sequential", "Batching speed-up",
                 "CPU cores", "python benchmarks/ablation.py --data"):
        assert text in section, text
    assert results.read_text().startswith("# Results\n") and section in results.read_text()
    # The draft and the measured single-pass run send the same prompt: with a scripted model they agree.
    assert "SQL strings are identical" in section
    for run in ("mcp", "single", "stages-nc-cw", "throughput-sequential", "throughput-batched"):
        assert (tmp_path / "runs" / run / "summary.json").is_file(), run


def test_report_only_writes_the_section_of_a_stopped_run_without_a_model(data: Path, tmp_path: Path) -> None:  # noqa: F811
    ablation = load_ablation()
    common = ["--data", str(data), "--split", "dev.json", "--limit", "6", "--throughput-n", "0", "--no-single-run",
              "--no-progress", "--no-plots", "--out", str(tmp_path / "runs")]
    assert ablation.main(common, llm=model()) == 0
    lines = (tmp_path / "runs" / "mcp" / "predictions.jsonl").read_text().splitlines()
    (tmp_path / "runs" / "mcp" / "predictions.jsonl").write_text("\n".join(lines[:4]) + "\n")  # stopped after 4
    (tmp_path / "runs" / "ablation.md").unlink()
    assert ablation.main([*common, "--report-only"], llm=None) == 0  # no model is loaded
    section = (tmp_path / "runs" / "ablation.md").read_text()
    assert "(4 questions, seed 0)" in section and "+SL+NC+CW (full MCP)" in section
    assert "run-to-run noise not measured" in section or "does not beat" in section
    with pytest.raises(SystemExit, match="no run.json"):
        ablation.main([*common[:-1], str(tmp_path / "empty"), "--report-only"], llm=None)


def test_machine_info_and_default_data(monkeypatch) -> None:
    ablation = load_ablation()
    info = ablation.machine_info()
    assert int(info["nproc"]) >= 1 and info["cpu"]
    monkeypatch.setenv("ROUTE_GRAPH_DATA", "/somewhere")
    assert ablation.default_data_dir() == Path("/somewhere/spider_train")


def load_finetune_gain():
    spec = importlib.util.spec_from_file_location("route_graph_finetune_gain", ABLATION.with_name("finetune_gain.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_finetune_gain_compares_two_ablations(data: Path, tmp_path: Path) -> None:  # noqa: F811
    ablation, gain = load_ablation(), load_finetune_gain()
    common = ["--data", str(data), "--split", "dev.json", "--limit", "6", "--concurrency", "2",
              "--throughput-n", "0", "--no-single-run", "--no-progress", "--no-plots"]
    assert ablation.main([*common, "--out", str(tmp_path / "base")], llm=model()) == 0
    assert ablation.main([*common, "--out", str(tmp_path / "tuned")], llm=model()) == 0
    train = tmp_path / "train"
    train.mkdir()
    (train / "train_summary.json").write_text(
        '{"method": "lora", "records": 10, "tokens": 900, "completion_tokens": 300, "mix": {"available": {"ts": 9, "sl": 9}, "taken": {"ts": 6, "sl": 4}},'
        ' "steps": 3, "train_loss": 0.5, "seconds": 120, "device": "cpu", "threads": 2, "precision": "fp32",'
        ' "config": {"lora_r": 16, "lora_alpha": 32, "batch_size": 2, "grad_accum": 2, "learning_rate": 0.0002, "epochs": 1}}')
    (train / "train_log.jsonl").write_text('{"step": 1, "loss": 0.9}\n{"step": 3, "loss": 0.2}\n')
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n")
    argv = ["--base", str(tmp_path / "base"), "--tuned", str(tmp_path / "tuned"), "--train-dir", str(train),
            "--results", str(results)]
    assert gain.main(argv) == 0
    text = results.read_text()
    for part in ("## Fine-tuning gain", "### Training", "first logged 0.900, last logged 0.200", "ts 6, sl 4",
                 "### EX by variant: tuned vs base", "+SL+NC+CW (full MCP)", "### Per-stage attribution",
                 "| tuned | final |", "### Schema linking, cost and failures", "within the noise"):
        assert part in text, part
    # The same scripted model on both sides: every paired gain is exactly zero.
    assert "+0.0 to +0.0" in text and "better by more than the noise" not in text


def test_finetune_gain_partial_run_and_different_samples(data: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    ablation, gain = load_ablation(), load_finetune_gain()
    for name, limit, seed in (("a", "4", "0"), ("b", "4", "1")):
        assert ablation.main(["--data", str(data), "--split", "dev.json", "--limit", limit, "--sample-seed", seed,
                              "--throughput-n", "0", "--no-single-run", "--no-progress", "--no-plots",
                              "--out", str(tmp_path / name)], llm=model()) == 0
    with pytest.raises(SystemExit, match="not on the same questions"):
        gain.main(["--base", str(tmp_path / "a"), "--tuned", str(tmp_path / "b")])
    # A run still in progress (fewer questions finished) is compared on the questions both have.
    partial = tmp_path / "partial" / "mcp"
    partial.mkdir(parents=True)
    (partial / "run.json").write_text((tmp_path / "a" / "mcp" / "run.json").read_text())
    lines = (tmp_path / "a" / "mcp" / "predictions.jsonl").read_text().splitlines()
    (partial / "predictions.jsonl").write_text("\n".join(lines[:2]) + "\n")
    capsys.readouterr()
    assert gain.main(["--base", str(tmp_path / "a"), "--tuned", str(tmp_path / "partial")]) == 0
    assert "Compared on the 2 of 4 sampled questions" in capsys.readouterr().out
    # Two graph configurations of one model: the sides carry the given names.
    assert gain.main(["--base", str(tmp_path / "a"), "--tuned", str(tmp_path / "partial"), "--labels", "old default,new default"]) == 0
    text = capsys.readouterr().out
    assert "## old default vs new default, same model" in text and "### EX by variant: new default vs old default" in text
    assert "| new default | final |" in text and "| tuned |" not in text
    with pytest.raises(SystemExit, match="two names"):
        gain.main(["--base", str(tmp_path / "a"), "--tuned", str(tmp_path / "b"), "--labels", "only-one"])
    with pytest.raises(SystemExit, match="not a finished evaluation run"):
        gain.main(["--base", str(tmp_path / "missing"), "--tuned", str(tmp_path / "b")])


def test_finetune_gain_single_mode_run_against_the_mcp_draft(data: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    ablation, gain = load_ablation(), load_finetune_gain()
    assert ablation.main(["--data", str(data), "--split", "dev.json", "--limit", "6", "--throughput-n", "0",
                          "--no-progress", "--no-plots", "--out", str(tmp_path / "runs")], llm=model()) == 0
    capsys.readouterr()
    # A --mode single run compares with the MCP run's draft (the same prompt), and with nothing else.
    assert gain.main(["--base", str(tmp_path / "runs" / "mcp"), "--tuned", str(tmp_path / "runs" / "single")]) == 0
    text = capsys.readouterr().out
    table = text.split("### EX by variant")[1].split("###")[0]
    assert "| single-pass |" in table and "+SL" not in table and "full MCP" not in table
    assert "+0.0 to +0.0" in table


def test_finetune_gain_different_stage_sets_compare_the_final_answer_only(data: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    ablation, gain = load_ablation(), load_finetune_gain()
    assert ablation.main(["--data", str(data), "--split", "dev.json", "--limit", "6", "--throughput-n", "0",
                          "--no-single-run", "--variants", "sl", "--no-progress", "--no-plots",
                          "--out", str(tmp_path / "runs")], llm=model()) == 0
    capsys.readouterr()
    # Full MCP against a run with only schema linking on (e.g. NC and CW off): one row, the final answer.
    assert gain.main(["--base", str(tmp_path / "runs"), "--tuned", str(tmp_path / "runs" / "stages-sl"),
                      "--labels", "all stages,sl only"]) == 0
    text = capsys.readouterr().out
    assert "Stage sets differ (all stages: sl,nc,cw,rescue; sl only: sl): compared on the final answer only." in text
    table = text.split("### EX by variant")[1].split("###")[0]
    assert "full MCP" in table and "single-pass" not in table and "+SL |" not in table
    # The same MCP stage set on both sides keeps every cumulative row.
    assert gain.main(["--base", str(tmp_path / "runs"), "--tuned", str(tmp_path / "runs")]) == 0
    text = capsys.readouterr().out
    assert "Stage sets differ" not in text and "| single-pass |" in text.split("### EX by variant")[1]


def test_extend_run_seeds_an_ablation_over_more_questions(data: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    ablation = load_ablation()
    spec = importlib.util.spec_from_file_location("route_graph_extend_run", ABLATION.with_name("extend_run.py"))
    extend = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extend)
    common = ["--data", str(data), "--split", "dev.json", "--sample-seed", "0", "--throughput-n", "0",
              "--no-single-run", "--no-progress", "--no-plots"]
    assert ablation.main([*common, "--limit", "3", "--out", str(tmp_path / "small")], llm=model()) == 0
    assert extend.main(["--stored", str(tmp_path / "small" / "mcp"), "--limit", "7",
                        "--out", str(tmp_path / "large" / "mcp")]) == 0
    assert "seeded with 3 answers" in capsys.readouterr().out
    llm = model()
    assert ablation.main([*common, "--limit", "7", "--out", str(tmp_path / "large")], llm=llm) == 0
    asked = {question for question, _ in llm.calls}
    small = (tmp_path / "small" / "mcp" / "predictions.jsonl").read_text().splitlines()
    assert asked and not asked & {json.loads(line)["question"] for line in small}
    assert (tmp_path / "large" / "mcp" / "predictions.jsonl").read_text().splitlines()[:3] == small
    assert extend.main(["--stored", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    # A run recorded as 'default' ran the untuned base (then the default): its extension is the base's.
    run_file = tmp_path / "small" / "mcp" / "run.json"
    record = json.loads(run_file.read_text())
    run_file.write_text(json.dumps({**record, "settings": {**record["settings"], "model": "default"}}))
    assert extend.main(["--stored", str(run_file.parent), "--limit", "7", "--out", str(tmp_path / "old" / "mcp")]) == 0
    assert json.loads((tmp_path / "old" / "mcp" / "run.json").read_text())["settings"]["model"] == "qwen2.5-coder-0.5b"


def test_schema_tokens_replays_a_run_under_other_sample_rows(data: Path, tmp_path: Path, capsys) -> None:  # noqa: F811
    ablation = load_ablation()
    spec = importlib.util.spec_from_file_location("route_graph_schema_tokens", ABLATION.with_name("schema_tokens.py"))
    schema_tokens = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(schema_tokens)
    assert ablation.main(["--data", str(data), "--split", "dev.json", "--limit", "6", "--throughput-n", "0",
                          "--no-single-run", "--no-progress", "--no-plots", "--out", str(tmp_path / "runs")],
                         llm=model()) == 0
    words = lambda text: len(text.split())
    predicted = schema_tokens.replay_prompt_tokens(tmp_path / "runs", data, [(0, 0), (1, 1), (2, 2)], words)
    assert next(iter(predicted)) == (3, 10)  # the run's own setting comes first
    # Sample rows only add text (the fixture's tables hold 3 rows): fewer rows predict fewer tokens.
    assert predicted[(0, 0)] < predicted[(1, 1)] < predicted[(2, 2)] < predicted[(3, 10)]
    table = capsys.readouterr().out
    assert "| 0 | 0 |" in table and "| 2 | 2 |" in table
