"""benchmarks/ablation.py end to end on the tiny fixture dataset, with the scripted model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

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


def test_machine_info_and_default_data(monkeypatch) -> None:
    ablation = load_ablation()
    info = ablation.machine_info()
    assert int(info["nproc"]) >= 1 and info["cpu"]
    monkeypatch.setenv("ROUTE_GRAPH_DATA", "/somewhere")
    assert ablation.default_data_dir() == Path("/somewhere/spider_train")
