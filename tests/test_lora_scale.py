"""``lora_scale``: a LoRA adapter applied at a chosen strength, from the model spec to llama.cpp."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from route_graph.errors import ModelError
from route_graph.models.spec import parse_model_spec


def test_spec_reads_an_adapter_scale() -> None:
    spec = parse_model_spec("qwen2.5-coder-0.5b+finetune/phases/1-ts-full@0.75")
    assert (spec.kind, spec.adapter, spec.adapter_scale) == ("offline", "finetune/phases/1-ts-full", 0.75)
    assert parse_model_spec("qwen2.5-coder-0.5b+some/dir").adapter_scale == 1.0
    with pytest.raises(ModelError, match="between 0 and 4"):
        parse_model_spec("qwen2.5-coder-0.5b+some/dir@9")


def test_lora_scale_reaches_the_llama_cpp_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from route_graph.models.engines import llamacpp_chat

    seen: list[tuple[Any, ...]] = []

    class Recorder:
        def __init__(self, *args: Any) -> None:
            seen.append(args)

    monkeypatch.setattr(llamacpp_chat, "_LlamaEngine", Recorder)
    monkeypatch.setattr(llamacpp_chat, "_ENGINES", {})
    model, adapter = tmp_path / "m.gguf", tmp_path / "a.gguf"
    model.write_bytes(b"GGUF"), adapter.write_bytes(b"GGUF")
    half = llamacpp_chat.LlamaCppChatModel(model_path=str(model), lora_path=str(adapter), lora_scale=0.5)
    full = llamacpp_chat.LlamaCppChatModel(model_path=str(model), lora_path=str(adapter))
    assert half.engine() is not full.engine()  # two strengths, two loaded engines
    assert [args[-2:] for args in seen] == [(str(adapter.resolve()), 0.5), (str(adapter.resolve()), 1.0)]


def test_transformers_engine_refuses_a_scale() -> None:
    from route_graph.models import load_chat_model

    with pytest.raises(ModelError, match="llama.cpp engine only"):
        load_chat_model("transformers:qwen2.5-coder-0.5b+some/dir@0.5")
