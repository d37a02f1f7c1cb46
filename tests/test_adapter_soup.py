"""benchmarks/adapter_soup.py: the averaged adapter's delta is the weighted sum of the adapters' deltas."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from route_graph.errors import ConfigError

SOUP = Path(__file__).resolve().parents[1] / "benchmarks" / "adapter_soup.py"
RANK, ALPHA = 4, 8


def _module():
    spec = importlib.util.spec_from_file_location("adapter_soup", SOUP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def lineage(tmp_path_factory):
    """A tiny Qwen2 and two LoRA adapters on it with different random non-zero B."""
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    from transformers import AutoModelForCausalLM

    from finetune.training.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("soup")
    base = build_tiny_model(
        root / "base",
        ["SELECT name FROM singer WHERE age > 30"] * 20,
        hidden_size=32,
        layers=2,
    )
    adapters = []
    for seed in (1, 2):
        model = AutoModelForCausalLM.from_pretrained(base)
        config = peft.LoraConfig(
            r=RANK,
            lora_alpha=ALPHA,
            lora_dropout=0.0,
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        )
        tuned = peft.get_peft_model(model, config)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in tuned.named_parameters():
                if "lora_" in name:
                    param.copy_(torch.randn_like(param) * 0.5)
        tuned.save_pretrained(root / f"adapter{seed}")
        adapters.append(root / f"adapter{seed}")
    return base, adapters


def _deltas(folder: Path) -> dict:
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    return {
        key[: -len(".lora_A.weight")]: scale
        * tensors[key.replace("lora_A", "lora_B")].float()
        @ tensors[key].float()
        for key in tensors
        if key.endswith(".lora_A.weight")
    }


@pytest.mark.parametrize("weights", [None, [0.25, 0.75]])
def test_the_soup_is_the_weighted_sum_of_the_deltas_in_bf16(lineage, tmp_path, weights):
    from safetensors import safe_open

    base, adapters = lineage
    out = _module().average_adapters(base, adapters, tmp_path / "soup", weights)
    w = weights or [0.5, 0.5]
    first, second, soup = _deltas(adapters[0]), _deltas(adapters[1]), _deltas(out)
    assert (
        soup.keys() == first.keys() and len(soup) == 14
    )  # 7 linear modules x 2 layers
    for key, delta in soup.items():
        expected = w[0] * first[key] + w[1] * second[key]
        assert (delta - expected).norm() <= 0.01 * expected.norm(), (
            key
        )  # bf16 rounding only
        assert (
            delta - first[key]
        ).norm() > 0.1 * expected.norm()  # not just one of them
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = f.keys()
        assert {str(f.get_tensor(name).dtype) for name in names} == {"torch.bfloat16"}
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 2 * RANK
    assert json.loads((out / "soup.json").read_text())["weights"] == w


def test_one_weight_per_adapter_and_two_adapters_at_least(lineage, tmp_path):
    base, adapters = lineage
    soup = _module()
    with pytest.raises(ConfigError, match="one weight per adapter"):
        soup.average_adapters(base, adapters, tmp_path / "x", [1.0])
    with pytest.raises(ConfigError, match="at least two"):
        soup.average_adapters(base, adapters[:1], tmp_path / "y")
