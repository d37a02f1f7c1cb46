"""A training run that survives interruption: a run key, keyed checkpoints, clock-driven saves, a deadline.

A CPU MSFT run takes hours and a session ends when it ends. Checkpoints therefore live in the
cache directory under a key hashed from everything that decides the result (training config,
base model, the encoded training rows): re-running the same command, also days later, finds
them and continues; a changed config or data set gets a different key and starts fresh, and an
explicit ``resume`` path written under another key is refused with the fields that differ.
Saves happen every ``save_minutes`` of wall clock (steps vary 10x in length with prefix
groups), and ``deadline`` stops training with a checkpoint before a session ends.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from route_graph.errors import ConfigError

__all__ = [
    "KEY_FILE",
    "NOT_IN_KEY",
    "adapter_sha256",
    "check_key",
    "checkpoint_root",
    "parse_deadline",
    "run_key",
    "schedule_callback",
]

KEY_FILE = "run_key.json"  # in a checkpoint root: which run wrote these checkpoints

# TrainConfig fields that do not change what is learned (where and how often to save, threads),
# and how long to train: a longer max_steps/epochs continues the same run from its checkpoint.
# Where the starting adapter and extra records lie is not what they hold: their content is keyed.
NOT_IN_KEY = frozenset({
    "resume", "threads", "logging_steps", "save_steps", "save_total_limit", "save_minutes", "deadline",
    "checkpoint_dir", "max_steps", "epochs", "data_sha256", "init_adapter", "extra_records",
})


def _model_identity(base: str) -> dict[str, Any]:
    """A model directory's config and weight-file sizes (a hub id stands for itself)."""
    path = Path(base)
    if not path.is_dir():
        return {"id": base}
    weights = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin"))
    config = path / "config.json"
    return {
        "config": hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else None,
        "weights": [(p.name, p.stat().st_size) for p in weights],
    }


def adapter_sha256(directory: str | Path) -> str:
    """sha256 of an adapter directory's weights file (what a phase starts from)."""
    path = Path(directory).expanduser()
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise ConfigError(f"{path} holds no adapter_model.safetensors; train.init_adapter must name a LoRA adapter directory.")
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def run_key(cfg: Any, base: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``{"key": hex, "fields": {...}}``: the hash and what went into it (for mismatch messages)."""
    data = hashlib.sha256()
    for row in rows:
        data.update(json.dumps([row["input_ids"], row["labels"]], separators=(",", ":")).encode())
    fields = {
        "train": {k: v for k, v in sorted(asdict(cfg).items()) if k not in NOT_IN_KEY},
        "base_model": _model_identity(base),
        "data": {"rows": len(rows), "sha256": data.hexdigest()},
    }
    if getattr(cfg, "init_adapter", None):  # the starting weights, not where they happen to lie
        fields["init_adapter"] = adapter_sha256(cfg.init_adapter)
    key = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()
    return {"key": key, "fields": fields}


def checkpoint_root(cfg: Any, key: dict[str, Any]) -> Path:
    """``cfg.checkpoint_dir`` or ``<cache>/train/<key[:16]>``."""
    if cfg.checkpoint_dir:
        return Path(cfg.checkpoint_dir).expanduser()
    from route_graph._cache import model_cache_dir

    return model_cache_dir() / "train" / key["key"][:16]


def _differences(old: dict[str, Any], new: dict[str, Any], where: str = "") -> list[str]:
    out: list[str] = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, f"{where}{name}."))
        elif a != b:
            out.append(f"{where}{name}: {a!r} -> {b!r}")
    return out


def check_key(directory: Path, key: dict[str, Any], *, file: str = KEY_FILE, what: str = "checkpoints", write: bool = True) -> None:
    """Refuse ``directory`` when it holds another run's key; else record ``key`` there (``write``)."""
    path = directory / file
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old.get("key") != key["key"]:
            changed = _differences(old.get("fields", {}), key["fields"]) or ["(unknown fields)"]
            raise ConfigError(
                f"{directory} holds {what} of a different training run, so it cannot be continued: "
                + "; ".join(changed[:8])
                + ". Use another output/checkpoint directory, restore the old settings, or delete it to start over."
            )
        return
    if not write:
        return
    directory.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(key, indent=2, default=str), encoding="utf-8")
    tmp.replace(path)


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m(?:in)?)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_deadline(value: str | None, now: float | None = None) -> float | None:
    """``"2h30m"``, ``"45m"``, ``"90s"`` (from now) or an ISO time -> a ``time.time()`` stamp."""
    if not value:
        return None
    now = time.time() if now is None else now
    match = _DURATION.match(value)
    if match and any(match.groups()):
        hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
        return now + hours * 3600 + minutes * 60 + seconds
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"deadline {value!r} is neither a duration (2h30m, 45m, 90s) nor an ISO time (2026-12-01T18:00).") from None
    if stamp.tzinfo is None:
        stamp = stamp.astimezone()  # local time
    return stamp.timestamp()


def schedule_callback(save_minutes: float | None, deadline: float | None) -> Any:
    """A ``TrainerCallback``: save every ``save_minutes``; before ``deadline``, save and stop.

    Training stops when the next step (estimated from the mean step so far) would end past the
    deadline, with the checkpoint written; ``state.stopped_at_deadline`` tells the caller.
    """
    from transformers import TrainerCallback

    class Schedule(TrainerCallback):
        def __init__(self) -> None:
            self.last_save = time.time()
            self.started = time.time()
            self.first_step = 0
            self.stopped_at_deadline = False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.started = self.last_save = time.time()
            self.first_step = state.global_step

        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.last_save = time.time()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            now = time.time()
            if save_minutes and now - self.last_save >= save_minutes * 60:
                control.should_save = True
            if deadline is not None:
                done = max(state.global_step - self.first_step, 1)
                per_step = (now - self.started) / done
                if now + 1.5 * per_step >= deadline and state.global_step < state.max_steps:
                    control.should_save = True
                    control.should_training_stop = True
                    self.stopped_at_deadline = True

    return Schedule()
