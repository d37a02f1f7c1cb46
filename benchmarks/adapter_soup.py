"""Average LoRA adapters of one lineage into one adapter (a "soup"), to evaluate without training.

Why: phases 3d, 3e and 3f continue each other (same base, same LoRA shape, a fresh warm-up each)
and score within noise of one another; averaging the weights along a fine-tuning trajectory often
beats each point of it. peft's ``add_weighted_adapter(combination_type="cat")`` makes the exact
weighted sum of the adapters' deltas (sum of w_i * scaling_i * B_i A_i, rank = the sum of ranks);
this script only loads, combines and saves it as a plain adapter folder in bf16, which
``--model 'qwen2.5-coder-0.5b+DIR'`` evaluates like a phase.

    python benchmarks/adapter_soup.py finetune/phases/3d-msft-linked-noise \
        finetune/phases/3e-msft-linked-single-quotes finetune/phases/3f-msft-linked-single-quotes \
        --out outputs/soups/3def
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from route_graph.errors import ConfigError

__all__ = ["average_adapters", "main"]


def average_adapters(
    base_model: str | Path,
    adapters: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
) -> Path:
    """Write the weighted sum of ``adapters``' deltas (default: their mean) to ``out`` as one bf16 LoRA."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from finetune.training.export import copy_adapter

    if len(adapters) < 2:
        raise ConfigError("Give at least two adapter folders to average.")
    weights = list(weights) if weights is not None else [1.0 / len(adapters)] * len(adapters)
    if len(weights) != len(adapters):
        raise ConfigError(f"{len(weights)} weights for {len(adapters)} adapters: give one weight per adapter.")
    model = AutoModelForCausalLM.from_pretrained(str(base_model), torch_dtype=torch.float32)
    names = [f"a{i}" for i in range(len(adapters))]
    peft_model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, folder in zip(names[1:], adapters[1:], strict=True):
        peft_model.load_adapter(str(folder), adapter_name=name)
    peft_model.add_weighted_adapter(names, weights, adapter_name="soup", combination_type="cat")
    with tempfile.TemporaryDirectory() as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=["soup"])
        out = copy_adapter(Path(tmp) / "soup", out, dtype="bfloat16")  # bf16, as every committed phase
    record = {"base_model": str(base_model), "adapters": [str(a) for a in adapters], "weights": weights,
              "combination_type": "cat"}
    (out / "soup.json").write_text(json.dumps(record, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("adapters", nargs="+", help="adapter folders of one base (e.g. finetune/phases/3d-...)")
    parser.add_argument("--out", required=True, help="folder to write the averaged adapter to")
    parser.add_argument("--weights", type=float, nargs="+", help="one weight per adapter (default: the mean)")
    parser.add_argument("--base", default="qwen2.5-coder-0.5b",
                        help="base model: a packaged model name or a Hugging Face folder (default %(default)s)")
    args = parser.parse_args(argv)
    from finetune.training.train import resolve_base_model

    out = average_adapters(resolve_base_model(args.base), args.adapters, args.out, args.weights)
    print(f"wrote {out} (evaluate with --model '{args.base}+{out}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
