"""MSFT training records: TRL's conversational prompt/completion format, as JSONL.

Each line is ``{"task", "db_id", "example_id", "variant", "prompt": [messages], "completion":
[{"role": "assistant", ...}]}``. ``prompt``/``completion`` is the format TRL's ``SFTTrainer``
trains on with loss on the completion only, and HF ``datasets`` loads the file as is
(``load_dataset("json", data_files=...)``); the other keys say where a record came from.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from route_graph.errors import DataError

__all__ = ["Record", "count_by", "read_jsonl", "write_jsonl"]

Message = dict[str, str]


@dataclass(frozen=True)
class Record:
    """One training example: the prompt messages of a task and the assistant answer to learn."""

    task: str  # ts | sl | nc | cw
    db_id: str
    example_id: int
    variant: str  # e.g. "full_schema", "linked_schema", "correct", "corruption:flip_order", "model"
    prompt: list[Message]
    completion: list[Message]

    @classmethod
    def of(cls, task: str, db_id: str, example_id: int, variant: str, prompt: list[Message], answer: str) -> Record:
        return cls(task, db_id, example_id, variant, prompt, [{"role": "assistant", "content": answer}])

    @property
    def answer(self) -> str:
        return self.completion[-1]["content"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(
            task=str(data["task"]),
            db_id=str(data.get("db_id", "")),
            example_id=int(data.get("example_id", -1)),
            variant=str(data.get("variant", "")),
            prompt=list(data["prompt"]),
            completion=list(data["completion"]),
        )


def write_jsonl(records: Iterable[Record | dict[str, Any]], path: str | os.PathLike[str]) -> int:
    """Write records, one JSON object per line (atomically: a partial file never looks complete)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            data = record.to_dict() if isinstance(record, Record) else record
            handle.write(json.dumps(data, ensure_ascii=False) + "\n")
            count += 1
    tmp.replace(target)
    return count


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[Record]:
    """Records of a JSONL file written by ``write_jsonl`` (or any prompt/completion JSONL); a
    ``.gz`` file is read compressed (mined records committed beside a phase config are)."""
    source = Path(path)
    if not source.is_file():
        raise DataError(f"No records file at {source}; run `route-finetune synth` first.")
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield Record.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{source}:{number} is not a prompt/completion record ({exc}).") from exc


def count_by(records: Iterable[Record], *keys: str) -> dict[str, int]:
    """Counts keyed by ``task`` or ``task/variant`` etc. (the per-task report)."""
    counts: dict[str, int] = {}
    for record in records:
        key = "/".join(str(getattr(record, k)) for k in keys)
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
