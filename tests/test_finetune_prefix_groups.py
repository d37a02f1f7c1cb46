"""Prefix-grouped training computes the same loss and gradients as per-record training.

A tiny random Qwen2 (built from a config) with a LoRA adapter; records share a long prefix in
groups of different sizes, as MSFT records of one database do. The grouped batch (prefix run
once, suffixes against its cache) must give the per-record loss and, through the cache, the same
gradient on every trainable parameter, including the adapters of the layers that only see the
prefix through its keys and values.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

from finetune.training.encoding import IGNORE_INDEX, PadCollator
from finetune.training.prefix_groups import (
    PrefixGroupCollator,
    completion_loss_sum,
    group_by_prefix,
)


def _tiny_lora_model(seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config)
    model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", target_modules="all-linear", r=4, lora_alpha=8, lora_dropout=0.0))
    for name, param in model.named_parameters():  # peft zero-initialises B: make every adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    model.train()
    return model


def _record(rng: random.Random, prefix: list[int], question: int, answer: int) -> dict:
    suffix = [rng.randrange(3, 97) for _ in range(question)]
    completion = [rng.randrange(3, 97) for _ in range(answer)]
    ids = prefix + suffix + completion
    labels = [IGNORE_INDEX] * (len(prefix) + len(suffix)) + completion
    return {"input_ids": ids, "labels": labels, "length": len(ids), "task": "ts"}


def _records() -> list[dict]:
    rng = random.Random(0)
    schema_a = [rng.randrange(3, 97) for _ in range(60)]
    schema_b = [rng.randrange(3, 97) for _ in range(45)]
    rows = [_record(rng, schema_a, rng.randrange(3, 9), rng.randrange(2, 7)) for _ in range(5)]
    rows += [_record(rng, schema_b, rng.randrange(3, 9), rng.randrange(2, 7)) for _ in range(3)]
    rows.append(_record(rng, [rng.randrange(3, 97) for _ in range(40)], 5, 4))  # shares nothing
    return rows


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_grouping_shares_prefixes_and_keeps_every_scored_token_in_the_suffix() -> None:
    rows = _records()
    groups = group_by_prefix(rows, max_records=16, min_prefix=16)
    assert sorted(len(g.suffix_ids) for g in groups) == [1, 3, 5]
    assert sum(g.real_tokens for g in groups) == sum(r["length"] for r in rows)
    for group in groups:
        for suffix, labels in zip(group.suffix_ids, group.suffix_labels):
            assert labels[0] == IGNORE_INDEX  # the first scored token is predicted from the suffix
            assert len(suffix) == len(labels)
    big = next(g for g in groups if len(g.suffix_ids) == 5)
    assert len(big.prefix_ids) >= 60 and big.computed_tokens < big.real_tokens
    capped = group_by_prefix(rows, max_records=2, min_prefix=16)
    assert max(len(g.suffix_ids) for g in capped) == 2 and sum(len(g.suffix_ids) for g in capped) == len(rows)


def test_prefix_grouped_loss_and_gradients_equal_per_record_training() -> None:
    rows = _records()
    model = _tiny_lora_model()

    model.zero_grad()
    total_loss, total_tokens = torch.zeros(()), 0
    for row in rows:  # per record, unpadded
        batch = PadCollator(0, pad_to_multiple_of=None)([row])
        loss, scored, _ = completion_loss_sum(model, batch)
        total_loss, total_tokens = total_loss + loss.detach(), total_tokens + scored
        loss.backward()
    per_record = _grads(model)

    model.zero_grad()
    grouped_loss, grouped_tokens = torch.zeros(()), 0
    collate = PrefixGroupCollator(0)
    groups = group_by_prefix(rows, max_records=16, min_prefix=16)
    assert any(len(g.prefix_ids) for g in groups)
    for group in groups:
        loss, scored, _ = completion_loss_sum(model, collate([group.to_row()]))
        grouped_loss, grouped_tokens = grouped_loss + loss.detach(), grouped_tokens + scored
        loss.backward()
    grouped = _grads(model)

    assert grouped_tokens == total_tokens
    assert torch.allclose(grouped_loss, total_loss, rtol=1e-5, atol=1e-5)
    assert per_record.keys() == grouped.keys() and len(per_record) > 4
    for name, grad in per_record.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(grouped[name], grad, rtol=1e-4, atol=1e-6), name


def test_a_wrong_prefix_cache_would_be_caught() -> None:
    """The check above can fail: dropping the prefix's gradient path changes the gradients."""
    rows = _records()
    model = _tiny_lora_model()
    collate = PrefixGroupCollator(0)
    group = max(group_by_prefix(rows, min_prefix=16), key=lambda g: len(g.suffix_ids))
    batch = collate([group.to_row()])

    model.zero_grad()
    completion_loss_sum(model, batch)[0].backward()
    through_cache = _grads(model)

    model.zero_grad()
    with torch.no_grad():  # a prefix cache outside the graph: no gradient from the prefix
        out = model(input_ids=batch["prefix_ids"], use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values
    cache.batch_repeat_interleave(batch["input_ids"].shape[0])
    prefix_len = batch["prefix_ids"].shape[1]
    mask = torch.cat([torch.ones(batch["input_ids"].shape[0], prefix_len, dtype=torch.long), batch["attention_mask"]], 1)
    positions = torch.arange(prefix_len, prefix_len + batch["input_ids"].shape[1]).unsqueeze(0)
    name = "cache" if hasattr(out, "cache") else "past_key_values"
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=positions, **{name: cache}).logits
    targets = batch["labels"][:, 1:]
    torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum").backward()
    detached = _grads(model)
    assert any(not torch.allclose(through_cache[n], detached[n], rtol=1e-4, atol=1e-6) for n in through_cache)
