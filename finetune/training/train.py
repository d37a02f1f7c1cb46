"""Supervised fine-tuning on MSFT records: LoRA (default) or full, transformers ``Trainer``.

Why plain ``Trainer`` and not TRL's ``SFTTrainer``: the records are encoded here with the
tokenizer's chat template and completion-only labels (``encoding``), which is all SFTTrainer
would add, and one dependency fewer keeps the CPU install small. The same code runs on a GPU
unchanged (device and precision are detected); bf16 is used where the device supports it.

Checkpoints go to ``<cache>/train/<run key>/checkpoint-N`` (``finetune.training.checkpoints``: every
``save_steps`` and every ``save_minutes``; ``resume="auto"`` continues from the latest of the same
run key). Under ``output_dir``: ``adapter/`` (LoRA) or ``model/`` (full) at the end,
``train_log.jsonl`` (loss, learning rate, speed per logging step) and ``train_summary.json``
(``train_progress.json`` while a run stopped at its ``deadline`` waits to be continued).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from finetune.config import TrainConfig
from finetune.data.records import Record, read_jsonl
from finetune.training.checkpoints import (
    check_key,
    checkpoint_root,
    parse_deadline,
    run_key,
    schedule_callback,
)
from finetune.training.encoding import Encoded, PadCollator, encode_record
from finetune.training.mixing import MixReport, mix_records
from finetune.training.prefix_groups import (
    PrefixGroupCollator,
    completion_loss_sum,
    group_by_prefix,
)
from route_graph.errors import ConfigError, ModelError

__all__ = ["TrainResult", "build_training_set", "choose_precision", "load_records", "lora_config", "resolve_base_model", "train"]

log = logging.getLogger(__name__)

Precision = Literal["bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class TrainResult:
    """Where the trained weights are, and how training went."""

    output_dir: Path
    adapter_dir: Path | None
    model_dir: Path | None
    base_model: str
    steps: int
    train_loss: float | None
    seconds: float
    summary_path: Path
    finished: bool = True  # False: stopped at the deadline; the same call continues


def resolve_base_model(spec: str | None) -> str:
    """A loadable model path: the offline default's base (converted once), an offline name, or a dir.

    Training starts from base weights: None/'default' is the untuned base even where the default model
    is a packaged tuned one, and a spec with an adapter is refused (``train.init_adapter`` continues one).
    """
    from route_graph.models import DEFAULT_MODEL, ensure_default_model, parse_model_spec

    parsed = parse_model_spec(DEFAULT_MODEL if (spec or "").strip().lower() in ("", "default") else spec)
    if parsed.adapter is not None:
        raise ModelError(
            f"Fine-tuning starts from a base model, and {spec!r} is {parsed.target!r} plus an adapter: set "
            f"train.base_model to {parsed.target!r} and train.init_adapter to the adapter folder to continue it."
        )
    if parsed.kind == "offline":
        return str(ensure_default_model(parsed.target))
    if parsed.kind == "path":
        path = Path(parsed.target).expanduser()
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model directory (no config.json).")
        return str(path.resolve())
    if parsed.kind == "hf":
        return parsed.target  # from the local HF cache; transformers resolves it
    raise ModelError(f"Cannot fine-tune {spec!r}: a server model has no local weights; pass a model directory.")


# Qwen2/Llama-style projection names: peft's layers_to_transform needs a list, not "all-linear".
_DECODER_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_config(cfg: TrainConfig, num_layers: int) -> Any:
    """The LoRA adapter of ``cfg``: every linear layer, or those of the top ``lora_top_layers``.

    Adapting only the top layers leaves nothing trainable below them, so autograd neither keeps
    their activations nor runs backward through them.
    """
    from peft import LoraConfig

    top = cfg.lora_top_layers
    return LoraConfig(
        task_type="CAUSAL_LM",
        target_modules=_DECODER_LINEARS if top else "all-linear",
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        layers_to_transform=list(range(max(num_layers - top, 0), num_layers)) if top else None,
    )


def _cpu_bf16() -> bool:
    from route_graph.models import cpu_supports_bf16

    return cpu_supports_bf16()


def choose_precision(setting: str = "auto") -> Precision:
    """'auto': bf16 on GPUs and CPUs that support it (AMX/AVX512-BF16), fp16 on older GPUs, else fp32."""
    import torch

    if setting != "auto":
        if setting not in ("bf16", "fp16", "fp32"):
            raise ConfigError(f"precision must be auto, bf16, fp16 or fp32, got {setting!r}.")
        if setting == "fp16" and not torch.cuda.is_available():
            raise ConfigError("fp16 training needs a CUDA GPU; use bf16 or fp32 on CPU.")
        return setting  # type: ignore[return-value]
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if _cpu_bf16() else "fp32"


def build_training_set(
    records: Sequence[Record], tokenizer: Any, cfg: TrainConfig
) -> tuple[list[dict[str, Any]], MixReport]:
    """Mixed, encoded, shuffled training rows (``input_ids``, ``labels``, ``length``, ``task``)."""

    def encode(record: Record) -> Encoded | None:
        return encode_record(tokenizer, record, cfg.max_length, cfg.truncation)

    chosen, report = mix_records(records, cfg.task_ratios, cfg.max_records, encode, seed=cfg.seed, skip=cfg.skip_records)
    rows = [
        {"input_ids": e.input_ids, "labels": e.labels, "length": len(e.input_ids), "task": r.task}
        for r, e in chosen
    ]
    return rows, report


class _JsonlLogger:
    """Trainer callback: one JSON line per logging step (and a readable line on stderr)."""

    def __init__(self, path: Path, total_steps: int) -> None:
        from transformers import TrainerCallback

        self.path = path
        self.total = total_steps
        self.start = time.perf_counter()
        self.first_step: int | None = None
        owner = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                owner.start = time.perf_counter()
                owner.first_step = state.global_step

            def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
                owner.write(state.global_step, state.epoch, logs or {})

        self.callback = Callback()

    def write(self, step: int, epoch: float | None, logs: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.start
        done = step - (self.first_step or 0)
        entry = {
            "step": step,
            "epoch": round(epoch or 0.0, 4),
            **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in logs.items()},
            "elapsed_s": round(elapsed, 1),
            "s_per_step": round(elapsed / done, 2) if done else None,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")
        if "loss" in logs:
            eta = (self.total - step) * elapsed / done if done else float("nan")
            print(
                f"[train] step {step}/{self.total} loss {logs['loss']:.4f} "
                f"lr {logs.get('learning_rate', 0):.2e} {entry['s_per_step']} s/step eta {eta / 60:.1f} min",
                file=sys.stderr,
                flush=True,
            )


def load_records(records: str | os.PathLike[str] | Sequence[Record] | Sequence[str | os.PathLike[str]]) -> list[Record]:
    if isinstance(records, (str, os.PathLike)):
        return list(read_jsonl(records))
    items = list(records)
    if items and isinstance(items[0], (str, os.PathLike)):
        return [r for path in items for r in read_jsonl(path)]  # type: ignore[arg-type]
    return items  # type: ignore[return-value]


def _completion_loss_trainer() -> type:
    """A ``Trainer`` whose loss is ``prefix_groups.completion_loss_sum`` (plain or prefix-grouped batches).

    Models without ``logits_to_keep`` get the stock loss (and cannot train prefix-grouped).
    """
    import inspect

    import torch
    from peft import PeftModel
    from transformers import Trainer

    class CompletionLossTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
            base = model.get_base_model() if isinstance(model, PeftModel) else model
            if "logits_to_keep" not in inspect.signature(base.forward).parameters or "labels" not in inputs:
                if "prefix_ids" in inputs:
                    raise ConfigError(f"{type(base).__name__} has no logits_to_keep; train with train.prefix_groups=false.")
                self.loss_is_scaled_for_ga = None
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            loss, scored, outputs = completion_loss_sum(model, inputs)
            if num_items_in_batch is not None:  # normalised over the whole accumulated batch
                loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device, dtype=loss.dtype)
                self.loss_is_scaled_for_ga = True
            else:
                loss = loss / max(scored, 1)
                self.loss_is_scaled_for_ga = False
            return (loss, outputs) if return_outputs else loss

    return CompletionLossTrainer


def _load_init_adapter(model: Any, directory: str, wanted: Any) -> Any:
    """``model`` with a committed adapter loaded trainable (a phase continues the previous one).

    Only the weights carry over: the optimizer starts fresh and re-warms (ReLoRA-style restarts
    cost little), so a phase needs no optimizer state in the repository.
    """
    from peft import PeftConfig, PeftModel

    path = Path(directory).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"train.init_adapter={directory!r} is not a LoRA adapter directory (no adapter_config.json).")
    found = PeftConfig.from_pretrained(str(path))
    shape = ("r", "lora_alpha", "layers_to_transform")
    differ = [f"{name}: {getattr(found, name, None)!r} (adapter) vs {getattr(wanted, name, None)!r} (config)"
              for name in shape if getattr(found, name, None) != getattr(wanted, name, None)]
    if set(found.target_modules or ()) != set(wanted.target_modules or ()) and wanted.target_modules != "all-linear":
        differ.append(f"target_modules: {sorted(found.target_modules)} vs {sorted(wanted.target_modules)}")
    if differ:
        raise ConfigError(f"{path} has another LoRA shape than this config ({'; '.join(differ)}); make the train section match it.")
    return PeftModel.from_pretrained(model, str(path), is_trainable=True)


def _checkpointing_args(enabled: bool) -> dict[str, Any]:
    """Activation checkpointing under the TrainingArguments name this transformers version uses."""
    if not enabled:
        return {}
    import inspect

    from transformers import TrainingArguments

    name = "activation_checkpointing" if "activation_checkpointing" in inspect.signature(TrainingArguments).parameters else "gradient_checkpointing"
    return {name: True, f"{name}_kwargs": {"use_reentrant": False}}


def _latest_checkpoint(directory: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(directory)) if directory.is_dir() else None


def train(
    records: str | os.PathLike[str] | Sequence[Record] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
) -> TrainResult:
    """Fine-tune ``cfg.base_model`` on MSFT records; resumable; returns where the weights went."""
    cfg = cfg or TrainConfig()
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        TrainingArguments,
        set_seed,
    )
    from transformers.trainer_callback import PrinterCallback

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    base = resolve_base_model(cfg.base_model)
    precision = choose_precision(cfg.precision)
    started = time.perf_counter()

    tokenizer = AutoTokenizer.from_pretrained(base)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelError(f"The tokenizer of {base} has no chat template; MSFT trains chat models.")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, mix = build_training_set(load_records(records), tokenizer, cfg)
    if not rows:
        raise ConfigError(
            f"No training record fits max_length={cfg.max_length}; raise it or use truncation='truncate'."
        )
    key = run_key(cfg, base, rows)
    if cfg.data_sha256 and key["fields"]["data"]["sha256"] != cfg.data_sha256:
        raise ConfigError(
            f"The encoded training rows hash to {key['fields']['data']['sha256']}, but the config expects "
            f"{cfg.data_sha256}: this machine's synthesis or tokenizer differs from the one the phase was "
            "planned on. Check the data, route settings and package versions, or clear train.data_sha256."
        )
    checkpoints = checkpoint_root(cfg, key)
    check_key(checkpoints, key)
    resume = None
    if cfg.resume == "auto":
        resume = _latest_checkpoint(checkpoints)
    elif cfg.resume:
        resume = cfg.resume
        check_key(Path(resume).expanduser().parent, key, write=False)
    if cfg.prefix_groups and cfg.gradient_checkpointing:
        raise ConfigError("prefix_groups needs the prefix's cache kept in memory; set gradient_checkpointing or prefix_groups to false.")

    load_dtype = torch.float32
    if cfg.method == "lora" and precision in ("bf16", "fp16"):
        load_dtype = torch.bfloat16 if precision == "bf16" else torch.float16  # frozen base: half the memory
    model = AutoModelForCausalLM.from_pretrained(base, dtype=load_dtype)
    model.config.use_cache = False
    if cfg.method == "lora":
        wanted = lora_config(cfg, model.config.num_hidden_layers)
        if cfg.init_adapter:
            model = _load_init_adapter(model, cfg.init_adapter, wanted)
        else:
            from peft import get_peft_model

            model = get_peft_model(model, wanted)
        if cfg.gradient_checkpointing:
            model.enable_input_require_grads()
    elif cfg.method != "full":
        raise ConfigError(f"train.method must be 'lora' or 'full', got {cfg.method!r}.")

    import datasets

    if cfg.prefix_groups:
        groups = group_by_prefix(rows, max_records=cfg.prefix_group_records, max_suffix_tokens=cfg.prefix_group_tokens)
        dataset = datasets.Dataset.from_list([g.to_row() for g in groups])
        collator: Any = PrefixGroupCollator(int(tokenizer.pad_token_id))
        batch_size, batches = 1, len(groups)
        computed = sum(g.computed_tokens for g in groups)
    else:
        dataset = datasets.Dataset.from_list(rows).remove_columns(["task"])
        collator = PadCollator(int(tokenizer.pad_token_id))
        batch_size, batches = cfg.batch_size, math.ceil(len(rows) / cfg.batch_size)
        computed = sum(r["length"] for r in rows)
    steps_per_epoch = math.ceil(batches / cfg.grad_accum)
    total_steps = cfg.max_steps if cfg.max_steps > 0 else math.ceil(steps_per_epoch * cfg.epochs)
    warmup = int(cfg.warmup_steps) if cfg.warmup_steps >= 1 else round(cfg.warmup_steps * total_steps)
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        warmup_steps=warmup,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.scheduler,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        use_cpu=not torch.cuda.is_available(),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        **_checkpointing_args(cfg.gradient_checkpointing),
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        length_column_name="length",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        disable_tqdm=not sys.stderr.isatty(),
    )
    logger = _JsonlLogger(out / "train_log.jsonl", total_steps)
    schedule = schedule_callback(cfg.save_minutes, parse_deadline(cfg.deadline))
    trainer = _completion_loss_trainer()(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=[logger.callback, schedule],
    )
    trainer.remove_callback(PrinterCallback)  # logs go to train_log.jsonl and stderr; stdout stays clean
    print(
        f"[train] {len(rows)} records, {total_steps} steps, checkpoints in {checkpoints}"
        + (f"; resuming from {resume}" if resume else ""),
        file=sys.stderr,
        flush=True,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    finished = not schedule.stopped_at_deadline

    adapter_dir = model_dir = None
    if finished and cfg.method == "lora":
        adapter_dir = out / "adapter"
        trainer.model.save_pretrained(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
    elif finished:
        model_dir = out / "model"
        trainer.model.config.use_cache = True
        trainer.save_model(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
    else:
        print(
            f"[train] stopped before the deadline at step {trainer.state.global_step}/{total_steps} with a "
            "checkpoint; run the same command again to continue.",
            file=sys.stderr,
            flush=True,
        )
    seconds = time.perf_counter() - started
    tokens = sum(r["length"] for r in rows)
    summary = {
        "base_model": base,
        "method": cfg.method,
        "precision": precision,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "records": len(rows),
        "tokens": tokens,
        "computed_tokens": computed,
        "prefix_groups": len(dataset) if cfg.prefix_groups else None,
        "completion_tokens": sum(sum(1 for x in r["labels"] if x != -100) for r in rows),
        "mix": mix.to_dict(),
        "steps": trainer.state.global_step,
        "total_steps": total_steps,
        "finished": finished,
        "run_key": key["key"],
        "data_sha256": key["fields"]["data"]["sha256"],
        "init_adapter": key["fields"].get("init_adapter"),
        "checkpoint_dir": str(checkpoints),
        "resumed_from": resume,
        "train_loss": getattr(result, "training_loss", None),
        "train_runtime_s": (getattr(result, "metrics", {}) or {}).get("train_runtime"),
        "seconds": round(seconds, 1),
        "adapter_dir": str(adapter_dir) if adapter_dir else None,
        "model_dir": str(model_dir) if model_dir else None,
        "config": asdict(cfg),
    }
    summary_path = out / ("train_summary.json" if finished else "train_progress.json")
    summary_path.write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return TrainResult(
        output_dir=out,
        adapter_dir=adapter_dir,
        model_dir=model_dir,
        base_model=base,
        steps=trainer.state.global_step,
        train_loss=summary["train_loss"],
        seconds=seconds,
        summary_path=summary_path,
        finished=finished,
    )
