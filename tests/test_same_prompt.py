"""benchmarks/same_prompt.py: pairing two stored runs' answers to the same prompt, and the count table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("same_prompt", REPO / "benchmarks" / "same_prompt.py")
same_prompt = importlib.util.module_from_spec(spec)
sys.modules["same_prompt"] = same_prompt  # dataclasses look their module up
spec.loader.exec_module(same_prompt)  # type: ignore[union-attr]


def _write(path: Path, rows: list[dict]) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(i: int, stage: str, sql: str, correct: bool) -> dict:
    return {"id": i, "stage_sql": {stage: sql}, "executions": {sql: {"correct": correct}}}


def test_raw_sql_is_the_models_sql_before_requalification() -> None:
    record = {"stage_sql": {"generate": "SELECT b.x FROM a JOIN b"},
              "trace": [{"stage": "generate", "proposed_sql": "SELECT a.x FROM a JOIN b", "requalified": {"sql": "SELECT b.x FROM a JOIN b"}}]}
    assert same_prompt.raw_sql(record) == "SELECT a.x FROM a JOIN b"
    assert same_prompt.raw_sql({"stage_sql": {"generate": "SELECT 1"}}) == "SELECT 1"  # no trace: the stage's SQL


def test_pairs_follow_the_single_run_and_pick_keeps_differing_plus_agreeing(tmp_path: Path) -> None:
    _write(tmp_path / "single", [_row(3, "generate", "SELECT 1", True), _row(1, "generate", "SELECT a", True),
                                 _row(2, "generate", "SELECT b", False), _row(9, "generate", "SELECT c", True)])
    _write(tmp_path / "abl" / "mcp", [_row(1, "draft", "SELECT a ", True), _row(2, "draft", "SELECT b", False),
                                      _row(3, "draft", "SELECT 2", False)])  # no row 9: left out
    pairs = same_prompt.stored_pairs(tmp_path / "single", tmp_path / "abl")
    assert [p.id for p in pairs] == [3, 1, 2]
    assert [p.differ for p in pairs] == [True, False, False]  # "SELECT a " is stripped
    assert (pairs[0].single_correct, pairs[0].draft_correct) == (True, False)
    assert [p.id for p in same_prompt.pick(pairs, agree=1)] == [3, 1]
    assert [p.id for p in same_prompt.pick(pairs, agree=0)] == [3]


def test_summarize_counts_which_stored_answer_the_fresh_one_equals() -> None:
    Pair = same_prompt.Pair
    pairs = [Pair(1, "S1", "D1", True, False), Pair(2, "S2", "D2", False, True), Pair(3, "S3", "D3", True, False),
             Pair(4, "A", "A", True, True)]
    table = same_prompt.summarize(pairs, {1: "D1", 2: "D2", 3: "X", 4: "A"})
    lines = table.splitlines()
    assert lines[2] == "| stored answers differ | 3 | 2 | 1 | 0 | 2 | 1 |"
    assert lines[3] == "| stored answers agree | 1 | 0 | 0 | 1 | 1 | 0 |"
