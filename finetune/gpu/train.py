"""Device side of the GPU path: LoRA training from a ``.gpu_bundle`` on a machine with no network.

The machine has PyTorch, transformers and peft but neither route_graph nor its dependencies, and
files reach it only as size-capped chunks (``finetune.gpu.bundle`` writes them). So this file
imports only the standard library, numpy, torch, transformers, peft and safetensors (plus the
``gguf`` package the bundle carries), and it trains on token ids encoded on the CPU by the same
code ``finetune.training.train`` uses: nothing here renders a prompt.

    python3 finetune/gpu/train.py --bundle .gpu_bundle --check            # what has arrived
    python3 finetune/gpu/train.py --bundle .gpu_bundle --out "$OUT" --minutes 8

Training stops before the ``--minutes`` deadline (counted from start, loading included) with the
adapter it has. ``--out`` receives the adapter as bf16 safetensors split into <= 15 MiB parts, an
``adapter_manifest.json`` with their sha256, ``adapter_config.json`` and ``train_summary.json``:
at most 8 files, what the remote tool hands back.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ADAPTER_MANIFEST",
    "MANIFEST",
    "BundleError",
    "Example",
    "check_bundle",
    "join_parts",
    "load_examples",
    "main",
    "plan_steps",
    "prepare_base",
    "read_manifest",
    "sha256_file",
    "train",
]

MANIFEST = "meta/manifest.json"  # relative to the bundle root
ADAPTER_MANIFEST = "adapter_manifest.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
IGNORE_INDEX = -100
MIB = 1 << 20
OUT_PART_BYTES = 15 * MIB  # files come back at most 16 MiB each
OUT_MAX_FILES = 8  # ... and at most 8 of them
OUT_FIXED_FILES = 3  # adapter_config.json, adapter_manifest.json, train_summary.json
SAVE_RESERVE_S = 15.0  # kept free before the deadline for saving the adapter


class BundleError(RuntimeError):
    """The bundle is incomplete, corrupt or cannot be trained as it stands (the message says why)."""


def _say(message: str) -> None:
    print(f"[gpu_train] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- files and hashes
def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(8 * MIB), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(bundle) / MANIFEST
    if not path.is_file():
        raise BundleError(f"No {MANIFEST} under {bundle}: send the bundle's 'meta' folder first.")
    return json.loads(path.read_text(encoding="utf-8"))


def check_bundle(bundle: str | os.PathLike[str], manifest: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(units present and verified, units missing). A file of the wrong size or hash is an error:
    a unit that arrived damaged must be sent again, never trained on."""
    root = Path(bundle)
    present, missing = [], []
    for unit, names in manifest["units"].items():
        complete = True
        for name in names:
            path, expected = root / name, manifest["files"][name]
            if not path.is_file():
                complete = False
                continue
            size = path.stat().st_size
            if size != expected["size"]:
                raise BundleError(f"{name}: {size} bytes, expected {expected['size']}: send unit {unit!r} again.")
            got = sha256_file(path)
            if got != expected["sha256"]:
                raise BundleError(
                    f"{name}: sha256 mismatch (expected {expected['sha256']}, got {got}): the chunk is corrupt; "
                    f"send unit {unit!r} again."
                )
        (present if complete else missing).append(unit)
    return present, missing


def join_parts(parts: Sequence[tuple[Path, str]], dest: Path, sha256: str) -> Path:
    """Concatenate ``(path, sha256)`` parts into ``dest``, checking each part and the whole."""
    digest = hashlib.sha256()
    tmp = dest.with_name(dest.name + ".tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out:
        for path, expected in parts:
            data = path.read_bytes()
            got = hashlib.sha256(data).hexdigest()
            if got != expected:
                tmp.unlink(missing_ok=True)
                raise BundleError(f"{path}: sha256 mismatch (expected {expected}, got {got}): corrupt part.")
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise BundleError(f"{dest.name}: the joined parts hash to {digest.hexdigest()}, expected {sha256}.")
    os.replace(tmp, dest)
    return dest


def prepare_base(bundle: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """The base model, joined from its chunks once (``<bundle>/base/``): a .gguf file or an HF dir."""
    root, base = Path(bundle), manifest["base"]
    target = root / "base"
    marker = target / "joined.json"
    blob = target / base["file"]
    done = blob.is_file() if base["kind"] == "gguf" else (target / "hf" / "config.json").is_file()
    if done and marker.is_file() and json.loads(marker.read_text()).get("sha256") == base["sha256"]:
        return blob if base["kind"] == "gguf" else target / "hf"
    shutil.rmtree(target, ignore_errors=True)
    parts = [(root / name, manifest["files"][name]["sha256"]) for name in base["chunks"]]
    join_parts(parts, blob, base["sha256"])
    if base["kind"] == "hf_dir":
        with tarfile.open(blob) as archive:
            if hasattr(tarfile, "data_filter"):  # refuses absolute paths and links out of the folder
                archive.extractall(target / "hf", filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                archive.extractall(target / "hf")
        blob.unlink()
    marker.write_text(json.dumps({"sha256": base["sha256"]}))
    return blob if base["kind"] == "gguf" else target / "hf"


def _use_bundled_packages(bundle: Path, manifest: dict[str, Any]) -> None:
    """Put the bundle's pure-python packages (gguf) first on sys.path, before transformers looks.

    transformers decides whether gguf is available from its installed metadata, so the bundle
    carries the package's dist-info too.
    """
    pylib = manifest.get("pylib")
    if pylib and (bundle / pylib).is_dir() and str(bundle / pylib) not in sys.path:
        sys.path.insert(0, str((bundle / pylib).resolve()))


# ------------------------------------------------------------------------------------- examples
@dataclass(frozen=True)
class Example:
    """One encoded record: token ids, and which positions carry loss (the completion)."""

    input_ids: np.ndarray  # int32
    loss_mask: np.ndarray  # bool
    task: str

    @property
    def labels(self) -> list[int]:
        return np.where(self.loss_mask, self.input_ids, IGNORE_INDEX).tolist()


def load_examples(bundle: str | os.PathLike[str], manifest: dict[str, Any]) -> list[Example]:
    """The encoded training rows, in the order the CPU side mixed them."""
    tasks = manifest["data"]["tasks"]
    out: list[Example] = []
    for name in manifest["data"]["shards"]:
        with np.load(Path(bundle) / name) as shard:
            ids, mask, offsets, task = shard["ids"], shard["mask"].astype(bool), shard["offsets"], shard["task"]
        for i in range(len(offsets) - 1):
            a, b = int(offsets[i]), int(offsets[i + 1])
            out.append(Example(ids[a:b], mask[a:b], tasks[int(task[i])]))
    if len(out) != manifest["data"]["examples"]:
        raise BundleError(f"The data shards hold {len(out)} examples, the manifest says {manifest['data']['examples']}.")
    return out


def _epoch_batches(lengths: Sequence[int], batch_size: int, by_length: bool, rng: random.Random) -> list[list[int]]:
    """One epoch of batches. By length: shuffle, sort within megabatches of 50 batches (the idea of
    transformers' LengthGroupedSampler, written out so the device needs no Trainer internals) and
    run the longest batch first, so running out of memory happens at once, not at minute 7."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if by_length:
        mega = batch_size * 50
        order = [i for s in range(0, len(order), mega) for i in sorted(order[s : s + mega], key=lambda j: -lengths[j])]
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    if by_length and batches:
        longest = max(range(len(batches)), key=lambda b: max(lengths[j] for j in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def plan_steps(lengths: Sequence[int], hp: dict[str, Any]) -> list[list[list[int]]]:
    """Optimizer steps, each a list of micro-batches (indices): ``epochs`` or ``max_steps`` of them,
    ``grad_accum`` micro-batches per step (the last step of an epoch may have fewer)."""
    rng = random.Random(hp["seed"])
    per_epoch = math.ceil(math.ceil(len(lengths) / hp["batch_size"]) / hp["grad_accum"])
    total = hp["max_steps"] if hp["max_steps"] > 0 else math.ceil(per_epoch * hp["epochs"])
    steps: list[list[list[int]]] = []
    while len(steps) < total and lengths:
        batches = _epoch_batches(lengths, hp["batch_size"], hp["group_by_length"], rng)
        steps.extend(batches[s : s + hp["grad_accum"]] for s in range(0, len(batches), hp["grad_accum"]))
    return steps[:total]


def _collate(examples: Sequence[Example], pad_id: int, torch: Any, device: Any) -> dict[str, Any]:
    """Right-padded ids, labels (-100 off the completion) and attention mask, lengths rounded to 8."""
    longest = -(-max(len(e.input_ids) for e in examples) // 8) * 8
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.from_numpy(e.input_ids.astype(np.int64))
        labels[row, :n] = torch.from_numpy(np.where(e.loss_mask, e.input_ids, IGNORE_INDEX).astype(np.int64))
        mask[row, :n] = 1
    return {"input_ids": ids.to(device), "labels": labels.to(device), "attention_mask": mask.to(device)}


def _scored(e: Example) -> int:
    return int(e.loss_mask[1:].sum())  # position 0 is never predicted


# --------------------------------------------------------------------------------------- model
def _load_model(base: Path, kind: str, dtype: Any) -> Any:
    import transformers
    from transformers import AutoModelForCausalLM

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    dtype_kw = {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    if kind == "gguf":  # transformers dequantizes the GGUF (with the bundled gguf package)
        return AutoModelForCausalLM.from_pretrained(str(base.parent), gguf_file=base.name, **dtype_kw)
    return AutoModelForCausalLM.from_pretrained(str(base), **dtype_kw)


def _completion_loss(model: Any, batch: dict[str, Any], keep_logits: bool, torch: Any) -> Any:
    """Summed cross-entropy over completion tokens. Like ``finetune.training.prefix_groups.completion_loss_sum``
    (which the device cannot import), vocabulary logits are computed only where a completion token
    is predicted: projecting every prompt position onto 150k tokens is most of the memory."""
    targets = batch["labels"][:, 1:]
    if keep_logits:
        keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep).logits
        targets = targets[:, keep]
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def _write_adapter(model: Any, out: Path, manifest: dict[str, Any], torch: Any) -> dict[str, Any]:
    """bf16 adapter weights split into parts, with their hashes; adapter_config.json as peft wrote it."""
    from safetensors.torch import load_file, save

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True, save_embedding_layers=False)  # LoRA only
        config = json.loads((Path(tmp) / "adapter_config.json").read_text(encoding="utf-8"))
        weights = load_file(str(Path(tmp) / ADAPTER_WEIGHTS))
    data = save({k: v.to(torch.bfloat16).contiguous() for k, v in weights.items()}, metadata={"format": "pt"})
    config["base_model_name_or_path"] = manifest["base"]["spec"]
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    parts = []
    for i, start in enumerate(range(0, len(data), OUT_PART_BYTES)):
        chunk = data[start : start + OUT_PART_BYTES]
        name = f"{ADAPTER_WEIGHTS}.part-{i:02d}"
        (out / name).write_bytes(chunk)
        parts.append({"name": name, "size": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
    record = {"file": ADAPTER_WEIGHTS, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": parts}
    (out / ADAPTER_MANIFEST).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return record


def train(bundle: str | os.PathLike[str], out: str | os.PathLike[str], minutes: float, *, max_steps: int | None = None) -> dict[str, Any]:
    """Verify, join and load the base, train LoRA on the bundle's examples until done or the
    deadline, write the adapter parts and ``train_summary.json`` to ``out``; return the summary."""
    started = time.monotonic()
    deadline = started + max(minutes, 0.0) * 60
    root, out_dir = Path(bundle), Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network there; never wait on one
    manifest = read_manifest(root)
    _, missing = check_bundle(root, manifest)
    if missing:
        raise BundleError(f"Units not on this machine yet: {missing}. Send them (carry) and run again.")
    base = prepare_base(root, manifest)
    _use_bundled_packages(root, manifest)
    verified = time.monotonic()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import get_scheduler

    hp = dict(manifest["train"])
    if max_steps is not None:
        hp["max_steps"] = max_steps
    random.seed(hp["seed"])
    np.random.seed(hp["seed"])
    torch.manual_seed(hp["seed"])
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    # bf16 base on GPUs (LoRA weights stay fp32: peft upcasts adapters), fp32 on CPU (the tests).
    model = _load_model(base, manifest["base"]["kind"], torch.bfloat16 if bf16 else torch.float32)
    model.config.use_cache = False
    model = get_peft_model(model, LoraConfig(**manifest["lora"])).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter_bytes = 2 * sum(p.numel() for p in trainable)
    if adapter_bytes > (OUT_MAX_FILES - OUT_FIXED_FILES) * OUT_PART_BYTES:
        raise BundleError(
            f"A {adapter_bytes / MIB:.0f} MiB bf16 adapter does not fit back through $OUT "
            f"({OUT_MAX_FILES - OUT_FIXED_FILES} parts of {OUT_PART_BYTES // MIB} MiB): lower lora_r or lora_top_layers."
        )
    import inspect

    keep_logits = "logits_to_keep" in inspect.signature(model.get_base_model().forward).parameters
    examples = load_examples(root, manifest)
    steps = plan_steps([len(e.input_ids) for e in examples], hp)
    warmup = hp["warmup_steps"]
    warmup = int(warmup) if warmup >= 1 else round(warmup * len(steps))
    optimizer = torch.optim.AdamW(trainable, lr=hp["learning_rate"], weight_decay=hp["weight_decay"])
    scheduler = get_scheduler(hp["scheduler"], optimizer, num_warmup_steps=warmup, num_training_steps=len(steps))
    pad_id = manifest["data"]["pad_token_id"]
    loaded = time.monotonic()
    _say(f"{len(examples)} examples, {len(steps)} steps on {device} ({'bf16' if bf16 else 'fp32'}), loaded in {loaded - started:.0f} s")

    model.train()
    curve: list[list[float]] = []
    seen_examples = seen_tokens = seen_scored = 0
    longest_step = 0.0
    stopped = False
    for number, micro in enumerate(steps, start=1):
        if time.monotonic() + longest_step + SAVE_RESERVE_S > deadline:
            stopped = True
            break
        tick = time.monotonic()
        scored = sum(_scored(examples[i]) for batch in micro for i in batch)
        total = 0.0
        for batch in micro:
            inputs = _collate([examples[i] for i in batch], pad_id, torch, device)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = _completion_loss(model, inputs, keep_logits, torch) / max(scored, 1)  # token mean over the step
            loss.backward()
            total += float(loss.detach())
            seen_examples += len(batch)
            seen_tokens += sum(len(examples[i].input_ids) for i in batch)
        seen_scored += scored
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)  # Trainer's default max_grad_norm, as finetune.training.train uses
        lr = scheduler.get_last_lr()[0]  # the rate this step uses
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        longest_step = max(longest_step, time.monotonic() - tick)
        curve.append([number, round(total, 5), float(f"{lr:.3e}")])
        if number == 1 or number % max(1, len(steps) // 20) == 0 or number == len(steps):
            _say(f"step {number}/{len(steps)} loss {total:.4f} ({time.monotonic() - started:.0f} s)")
    trained = time.monotonic()
    model.eval()
    record = _write_adapter(model, out_dir, manifest, torch)
    import peft
    import transformers

    gguf_module = sys.modules.get("gguf")
    summary = {
        "finished": not stopped and len(curve) == len(steps),
        "stopped_at_deadline": stopped,
        "steps": len(curve),
        "total_steps": len(steps),
        "examples": seen_examples,
        "examples_in_bundle": len(examples),
        "tokens": seen_tokens,
        "completion_tokens": seen_scored,
        "loss_curve": curve,
        "final_loss": curve[-1][1] if curve else None,
        "seconds": {
            "verify_and_join": round(verified - started, 1),
            "load": round(loaded - verified, 1),
            "train": round(trained - loaded, 1),
            "save": round(time.monotonic() - trained, 1),
            "total": round(time.monotonic() - started, 1),
        },
        "minutes_allowed": minutes,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "precision": "bf16" if bf16 else "fp32",
        "adapter_bytes": record["size"],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "gguf_module": getattr(gguf_module, "__file__", None),
        "base": {k: manifest["base"][k] for k in ("spec", "kind", "sha256")},
        "hyperparameters": hp,
    }
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=".gpu_bundle", help="The bundle folder (default .gpu_bundle).")
    parser.add_argument("--out", help="Where the adapter parts and train_summary.json go ($OUT).")
    parser.add_argument("--minutes", type=float, default=8.0, help="Stop training before this many minutes from start.")
    parser.add_argument("--max-steps", type=int, help="Override the manifest's step count (smoke runs).")
    parser.add_argument("--check", action="store_true", help="Only verify what has arrived; print present/missing units.")
    args = parser.parse_args(argv)
    try:
        manifest = read_manifest(args.bundle)
        if args.check:
            present, missing = check_bundle(args.bundle, manifest)
            print(json.dumps({"present": present, "missing": missing, "complete": not missing}))
            return 0
        if not args.out:
            parser.error("--out is required unless --check")
        summary = train(args.bundle, args.out, args.minutes, max_steps=args.max_steps)
    except BundleError as exc:
        _say(f"error: {exc}")
        return 2
    print(json.dumps({k: v for k, v in summary.items() if k not in ("loss_curve", "hyperparameters")}))
    return 0


if __name__ == "__main__":
    # Run as a script, this file's folder (finetune/gpu/) is first on sys.path, and its siblings
    # (bundle.py, and this train.py) would shadow any top-level module of those names.
    here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != here]
    sys.exit(main())
