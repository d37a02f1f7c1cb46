"""A training phase that outlives its machine: the finished adapter, in bf16, with its PHASE.md.

A full MSFT epoch takes longer on 2 CPU cores than one session lasts, and a fresh machine has
none of the previous run's checkpoints (they live in a cache). So training goes in phases, each a
complete schedule (warm-up, cosine to zero) over its own seeded slice of the data, and what
carries over from one session to the next is the finished phase's LoRA adapter, committed to the
repository: bf16 ``adapter_model.safetensors`` + ``adapter_config.json`` (no tokenizer, no
optimizer state: the next phase starts a fresh optimizer with ``train.init_adapter``) and a
PHASE.md that says how it was made. ``commit_phase`` writes that folder and refuses an unfinished
run or one over ``MAX_PHASE_BYTES``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from finetune.training.export import copy_adapter
from route_graph.errors import ConfigError

__all__ = ["MAX_PHASE_BYTES", "commit_phase", "cpu_name", "loss_summary", "refuse_git_ignored"]

MAX_PHASE_BYTES = 10 * 1024 * 1024  # a phase adapter committed to git stays under 10 MB


def cpu_name() -> str:
    """The CPU model and whether it has AMX / AVX512-BF16 (what decides training speed)."""
    model, flags = "unknown CPU", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    extras = [name for name, flag in (("AMX", "amx_tile"), ("AVX512-BF16", "avx512_bf16"), ("AVX-512", "avx512f")) if flag in flags]
    return f"{model}, {os.cpu_count()} cores ({', '.join(extras) if extras else 'AVX2 or older'})"


def loss_summary(log_path: Path, run_key: str | None = None) -> dict[str, Any]:
    """Loss at the first and last steps and the mean of each quarter, from ``train_log.jsonl``.

    A log that several runs appended to keeps only the entries of the last run (steps restart).
    """
    entries = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = [e for e in entries if "loss" in e]
    last_start = max((i for i, e in enumerate(steps) if e["step"] == 1), default=0)
    steps = steps[last_start:]
    if not steps:
        raise ConfigError(f"{log_path} holds no loss entries; did training run?")
    losses = [float(e["loss"]) for e in steps]
    quarter = max(1, len(losses) // 4)
    quarters = [losses[i : i + quarter] for i in range(0, len(losses), quarter)][:4]
    return {
        "first": round(losses[0], 4),
        "last": round(losses[-1], 4),
        "quarter_means": [round(sum(q) / len(q), 4) for q in quarters],
        "steps_logged": len(losses),
        "minutes": round(float(steps[-1].get("elapsed_s", 0.0)) / 60, 1),
    }


def refuse_git_ignored(path: Path) -> None:
    """Raise if git would skip ``path`` on ``git add``: a phase that is not committed dies with the machine.

    Phase 1's adapter was lost that way once (``*.safetensors`` in .gitignore; only its PHASE.md
    and config were committed). Outside a git work tree, or without git, there is nothing to check.
    """
    git = shutil.which("git")
    if git is None:
        return
    probe = subprocess.run(
        [git, "-C", str(path.parent), "check-ignore", "-q", path.name],
        capture_output=True, check=False, timeout=30,
    )
    if probe.returncode == 0:  # 1: not ignored; 128: not a work tree
        raise ConfigError(
            f"{path} is ignored by git, so committing the phase would leave its weights behind. "
            "Add a rule such as '!finetune/phases/*/adapter_model.safetensors' to .gitignore, then commit."
        )


def commit_phase(
    train_dir: str | os.PathLike[str],
    destination: str | os.PathLike[str],
    *,
    config_path: str,
    command: str,
    notes: str = "",
    base_model: str = "Qwen/Qwen2.5-Coder-0.5B-Instruct",
) -> Path:
    """Write ``destination``: the bf16 adapter of the finished run in ``train_dir`` and its PHASE.md."""
    train_dir, out = Path(train_dir), Path(destination)
    summary_path = train_dir / "train_summary.json"
    if not summary_path.is_file():
        raise ConfigError(
            f"{train_dir} has no train_summary.json: the phase has not finished (see train_progress.json); "
            "run the same training command again to continue it, then commit."
        )
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    if not summary.get("finished") or not summary.get("adapter_dir"):
        raise ConfigError(f"The run in {train_dir} did not finish with a LoRA adapter; only finished phases are committed.")
    copy_adapter(summary["adapter_dir"], out, dtype="bfloat16", base_model=base_model)
    refuse_git_ignored(out / "adapter_model.safetensors")
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    if size > MAX_PHASE_BYTES:
        raise ConfigError(f"The phase adapter is {size / 2**20:.1f} MiB, over {MAX_PHASE_BYTES / 2**20:.0f} MiB: lower lora_r or lora_top_layers.")
    loss = loss_summary(train_dir / "train_log.jsonl")
    cfg = summary["config"]
    lines = [
        f"# Phase: {out.name}",
        "",
        notes.strip() or "A finished MSFT training phase (finetune/training/phases.py).",
        "",
        "| what | value |",
        "| --- | --- |",
        f"| config | `{config_path}` |",
        f"| command | `{command}` |",
        f"| starts from | {cfg.get('init_adapter') or 'a fresh LoRA adapter'} (sha256 {summary.get('init_adapter') or '-'}) |",
        f"| data | {summary['records']} records, mix {json.dumps(summary['mix']['taken'])}, skip_records {cfg.get('skip_records', 0)}, max_records {cfg.get('max_records')} |",
        f"| data sha256 (encoded rows; `train.data_sha256` checks it) | `{summary.get('data_sha256')}` |",
        f"| tokens | {summary['tokens']:,} real, {summary['computed_tokens']:,} computed ({summary.get('prefix_groups')} prefix groups), {summary['completion_tokens']:,} completion |",
        f"| schedule | {summary['steps']} steps, lr {cfg['learning_rate']} {cfg['scheduler']}, warm-up {cfg['warmup_steps']}, grad_accum {cfg['grad_accum']} |",
        f"| LoRA | r {cfg['lora_r']}, alpha {cfg['lora_alpha']}, top {cfg.get('lora_top_layers') or 'all'} layers; saved bf16, {size / 2**20:.1f} MiB |",
        f"| loss | first {loss['first']}, last {loss['last']}, quarter means {loss['quarter_means']} |",
        f"| time | {summary['seconds'] / 60:.1f} min ({summary['precision']}, {summary['threads']} threads) |",
        f"| CPU | {cpu_name()} |",
        f"| run key | `{summary['run_key']}` |",
        "",
        "Use it: `--model 'qwen2.5-coder-0.5b+" + out.as_posix() + "'`; continue from it: `train.init_adapter`.",
        "",
    ]
    (out / "PHASE.md").write_text("\n".join(lines), encoding="utf-8")
    (out / "train_summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k not in ("adapter_dir", "checkpoint_dir", "base_model")}, indent=2) + "\n", encoding="utf-8")
    return out
