"""`route-sql eval` on 3 real questions of spider_train/valid.json with the real default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from route_graph.evaluation.cli import main


@pytest.mark.slow
def test_eval_real_model_three_questions(data_dir: Path, tmp_path: Path) -> None:
    spider = data_dir / "spider_train"
    if not (spider / "valid.json").is_file():
        pytest.skip(f"{spider / 'valid.json'} not found (set ROUTE_GRAPH_DATA to the shared data directory)")
    out = tmp_path / "eval"
    argv = ["--data", str(spider), "--split", "valid.json", "--limit", "3", "--sample-seed", "0",
            "--concurrency", "3", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["status"] in {"correct", "wrong", "pred_error"}
        assert record["cost"]["llm_calls"] >= 3 and record["cost"]["output_tokens"] > 0
        assert record["stage_sql"]["draft"] is not None and record["link_scores"] is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["scored"] == 3
    assert [row["checkpoint"] for row in summary["ablation"]] == [
        "draft", "generate", "noise_correct", "continue_write", "final"]
    assert (out / "report.md").is_file() and (out / "accuracy_by_stage.png").is_file()
