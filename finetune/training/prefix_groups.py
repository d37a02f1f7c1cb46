"""Prefix-grouped training: records that share a prompt prefix encode it once per batch.

Why: 94% of MSFT training tokens are prompt, mostly the system text and the schema of one
database, repeated for each of the ~50 questions Spider asks per database. Run as ordinary
records, every copy of that prefix goes through forward and backward again. Here the records of
a group (same leading tokens: same task, same database, same schema view) run the shared prefix
once, keep its key/value cache *inside the autograd graph*, and run only their own suffixes
(question + answer) against it. Attention is causal, so every suffix position sees exactly the
keys and values it would see in the full sequence: the loss, and the gradient flowing back into
the prefix through the cache, are those of per-record training (``tests/test_finetune_prefix_groups.py``
checks the gradients on a tiny model). The saving is measured by ``benchmarks/train_speed.py``.

A group's prefix stops before the first scored token's predecessor, so every scored logit comes
from a suffix position; a group is at most ``max_records`` records and ``max_suffix_tokens``
padded suffix tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finetune.training.encoding import IGNORE_INDEX

__all__ = ["PrefixGroup", "PrefixGroupCollator", "completion_loss_sum", "group_by_prefix", "grouped_forward"]


@dataclass(frozen=True)
class PrefixGroup:
    """Records sharing ``prefix_ids``; each suffix continues the prefix (labels aligned to it)."""

    prefix_ids: list[int]
    suffix_ids: list[list[int]]
    suffix_labels: list[list[int]]
    tasks: list[str]

    @property
    def real_tokens(self) -> int:
        """Tokens of the records as if trained one by one (the throughput's numerator)."""
        return len(self.suffix_ids) * len(self.prefix_ids) + sum(len(s) for s in self.suffix_ids)

    @property
    def computed_tokens(self) -> int:
        """Tokens actually run through the model (prefix once, suffixes unpadded)."""
        return len(self.prefix_ids) + sum(len(s) for s in self.suffix_ids)

    def to_row(self) -> dict[str, Any]:
        return {
            "prefix_ids": self.prefix_ids,
            "suffix_ids": self.suffix_ids,
            "suffix_labels": self.suffix_labels,
            "length": self.computed_tokens,
        }


def _first_scored(labels: Sequence[int]) -> int:
    return next((i for i, label in enumerate(labels) if label != IGNORE_INDEX), len(labels))


def _common_prefix(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def group_by_prefix(
    rows: Sequence[dict[str, Any]],
    *,
    max_records: int = 16,
    max_suffix_tokens: int = 4096,
    min_prefix: int = 32,
) -> list[PrefixGroup]:
    """Encoded rows (``input_ids``, ``labels``, ``task``) -> groups sharing ≥ ``min_prefix`` tokens.

    Rows are sorted by their token ids so that rows with a common prefix are neighbours; a group
    grows while the shared prefix stays ≥ ``min_prefix`` and the group's padded suffix batch
    stays within ``max_suffix_tokens``. A row sharing nothing useful is a group of its own.
    The order of groups is left to the trainer's sampler.
    """
    if max_records < 1:
        raise ValueError("max_records must be >= 1")
    order = sorted(range(len(rows)), key=lambda i: rows[i]["input_ids"])
    groups: list[PrefixGroup] = []
    members: list[dict[str, Any]] = []
    shared = 0

    def close() -> None:
        if not members:
            return
        # Every scored logit must come from a suffix position: the prefix ends before the token
        # that predicts the first scored token.
        cut = min([shared] + [_first_scored(m["labels"]) - 1 for m in members])
        cut = max(cut, 0) if len(members) > 1 else 0
        groups.append(
            PrefixGroup(
                prefix_ids=list(members[0]["input_ids"][:cut]),
                suffix_ids=[list(m["input_ids"][cut:]) for m in members],
                suffix_labels=[list(m["labels"][cut:]) for m in members],
                tasks=[str(m.get("task", "")) for m in members],
            )
        )

    for index in order:
        row = rows[index]
        if members:
            common = _common_prefix(members[0]["input_ids"], row["input_ids"], shared)
            cut = min(common, _first_scored(row["labels"]) - 1)
            longest = max(len(m["input_ids"]) for m in [*members, row]) - cut
            if common >= min_prefix and cut >= min_prefix and len(members) < max_records and longest * (len(members) + 1) <= max_suffix_tokens:
                members.append(row)
                shared = common
                continue
            close()
        members = [row]
        shared = len(row["input_ids"])
    close()
    return groups


class PrefixGroupCollator:
    """One group per batch: ``prefix_ids`` (1, P) and right-padded suffixes (B, S) with labels."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = 8) -> None:
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if len(features) != 1:
            raise ValueError("Prefix-grouped batches hold one group each (per_device_train_batch_size=1).")
        group = features[0]
        suffixes, labels = group["suffix_ids"], group["suffix_labels"]
        longest = max(len(s) for s in suffixes)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple
        ids = [list(s) + [self.pad_token_id] * (longest - len(s)) for s in suffixes]
        lab = [list(x) + [IGNORE_INDEX] * (longest - len(x)) for x in labels]
        mask = [[1] * len(s) + [0] * (longest - len(s)) for s in suffixes]
        return {
            "prefix_ids": torch.tensor([list(group["prefix_ids"])], dtype=torch.long),
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(lab, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }


def grouped_forward(model: Any, inputs: dict[str, Any], logits_to_keep: Any) -> Any:
    """Run the prefix once (its cache kept in the graph), then the suffix batch against it.

    ``logits_to_keep`` indexes suffix positions (as for an ordinary batch of the suffixes).
    Returns the suffix forward's output. Without a prefix this is an ordinary forward.
    """
    import torch

    prefix = inputs["prefix_ids"]
    suffix = inputs["input_ids"]
    mask = inputs["attention_mask"]
    batch, prefix_len = suffix.shape[0], prefix.shape[1]
    if prefix_len == 0:
        return model(input_ids=suffix, attention_mask=mask, logits_to_keep=logits_to_keep)
    name = _cache_argument(model)
    prefix_out = model(input_ids=prefix, use_cache=True, logits_to_keep=1)
    cache = getattr(prefix_out, name)
    if batch > 1:
        cache.batch_repeat_interleave(batch)  # differentiable: gradients of all rows sum into the prefix
    full_mask = torch.cat([mask.new_ones(batch, prefix_len), mask], dim=1)
    positions = torch.arange(prefix_len, prefix_len + suffix.shape[1], device=suffix.device).unsqueeze(0).expand(batch, -1)
    return model(
        input_ids=suffix,
        attention_mask=full_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=logits_to_keep,
        **{name: cache},
    )


def _cache_argument(model: Any) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (older): the forward's and output's name."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def completion_loss_sum(model: Any, inputs: dict[str, Any]) -> tuple[Any, int, Any]:
    """(summed cross-entropy over scored tokens, their count, model output) for a plain or grouped batch.

    Vocabulary logits are computed only where a completion token is predicted
    (``logits_to_keep``): completions are a small share of each record, and projecting every
    prompt position onto the 150k-token vocabulary in fp32 is most of the memory and a quarter
    of the compute of the stock causal-LM loss.
    """
    import torch.nn.functional as F

    labels = inputs["labels"]
    targets = labels[:, 1:]  # position p predicts token p + 1
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    if "prefix_ids" in inputs:
        outputs = grouped_forward(model, inputs, keep)
    else:
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"), logits_to_keep=keep)
    logits = outputs.logits.float()
    kept = targets[:, keep]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), kept.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((kept != IGNORE_INDEX).sum()), outputs
