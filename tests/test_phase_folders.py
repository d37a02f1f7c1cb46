"""Every committed training phase (finetune/phases/*) is whole: weights, config, PHASE.md, bf16, <= 10 MB.

Phase 1 was once "committed" without its weights (``*.safetensors`` was git-ignored); the next
machine found a folder it could not continue from. In a fresh clone this test fails on that.
"""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import pytest

from finetune.training.phases import MAX_PHASE_BYTES

ROOT = Path(__file__).resolve().parents[1]
PHASES = sorted(p for p in (ROOT / "finetune" / "phases").glob("*") if p.is_dir())


def safetensors_dtypes(path: Path) -> set[str]:
    """Tensor dtypes from a safetensors header (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


def test_there_is_a_committed_phase() -> None:
    assert PHASES, "finetune/phases/ holds no phase"


def test_at_most_six_phase_folders() -> None:
    """Issue 26 caps the tree at six phase folders: prune one whose child is committed (git keeps it)."""
    assert len(PHASES) <= 6, f"{len(PHASES)} phase folders: prune the oldest whose children are committed"


@pytest.mark.parametrize("phase", PHASES, ids=lambda p: p.name)
def test_phase_folder_is_whole(phase: Path) -> None:
    weights = phase / "adapter_model.safetensors"
    for name in ("PHASE.md", "adapter_config.json", "adapter_model.safetensors", "train_summary.json"):
        assert (phase / name).is_file(), f"{phase.name}: {name} is missing; commit it (route-finetune phase)"
    assert weights.stat().st_size <= MAX_PHASE_BYTES
    assert safetensors_dtypes(weights) == {"BF16"}
    summary = json.loads((phase / "train_summary.json").read_text())
    assert summary["finished"] and summary["data_sha256"] in (phase / "PHASE.md").read_text()
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(weights.relative_to(ROOT))], check=False)
    assert ignored.returncode != 0, f"{weights} is git-ignored: it would not be committed"
