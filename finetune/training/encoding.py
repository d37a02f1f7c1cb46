"""Records -> token ids with loss on the completion only, and the padding collator.

The tokenizer's own chat template renders the prompt exactly as inference renders it
(``add_generation_prompt=True``); the completion is whatever the template adds after that for
the assistant turn, up to and including its end-of-turn token. Prompt tokens, and template
tokens after the end-of-turn token (a newline in ChatML) that the model never generates, get
label -100, so the loss covers only what the model must learn to write.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from finetune.data.records import Record

__all__ = ["IGNORE_INDEX", "Encoded", "PadCollator", "encode_record"]

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """Token ids of prompt + completion and their labels (-100 where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def completion_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def _ids(tokenizer: Any, messages: list[dict[str, str]], generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # older/newer return types
        ids = ids["input_ids"]
    return list(ids)


def encode_record(
    tokenizer: Any,
    record: Record,
    max_length: int,
    truncation: Literal["drop", "truncate"] = "drop",
) -> Encoded | None:
    """Encode one record; None when it is too long (``drop``) or keeps no completion token."""
    prompt_ids = _ids(tokenizer, record.prompt, True)
    full_ids = _ids(tokenizer, record.prompt + record.completion, False)
    start = len(prompt_ids)
    if full_ids[:start] != prompt_ids:  # a template that renders history differently
        start = next((i for i, (a, b) in enumerate(zip(full_ids, prompt_ids)) if a != b), min(len(full_ids), start))
    end = len(full_ids)
    eos = tokenizer.eos_token_id
    if eos is not None and eos in full_ids[start:]:
        end = start + max(i for i, t in enumerate(full_ids[start:]) if t == eos) + 1
    labels = [IGNORE_INDEX] * start + full_ids[start:end] + [IGNORE_INDEX] * (len(full_ids) - end)
    if len(full_ids) > max_length:
        if truncation == "drop":
            return None
        full_ids, labels = full_ids[:max_length], labels[:max_length]
    encoded = Encoded(full_ids, labels)
    return encoded if encoded.completion_tokens else None


class PadCollator:
    """Right-pads a batch of encoded records (ids with the pad id, labels with -100)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        ids, labels, mask = [], [], []
        for f in features:
            pad = longest - len(f["input_ids"])
            ids.append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            labels.append(list(f["labels"]) + [IGNORE_INDEX] * pad)
            mask.append([1] * len(f["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }
