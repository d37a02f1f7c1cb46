"""CPU side of the GPU path: pack a training run for a remote GPU machine, and unpack its adapter.

The remote machine (the ``run`` tool) has no network and no route_graph, and takes files only as
git-ignored folders of at most 64 MiB per call, the working tree included. So everything that
needs route_graph happens here: records are mixed and encoded by ``finetune.training.train``'s own
``build_training_set`` (the tokenizer's chat template, completion-only labels), so the GPU trains
on exactly the prompts inference sends, and only token ids travel. The bundle (``.gpu_bundle/``)::

    meta/manifest.json   hyper-parameters (TrainConfig, LoRA as finetune.training.train.lora_config builds
                         it), base model, sha256 and size of every file, which folder holds what
    meta/pylib/          the pure-python gguf package (+ dist-info): transformers reads GGUF with it
    data-NN/shard-NN.npz encoded examples: int32 ids, uint8 loss mask, offsets, task codes
    part-NN/base.NNN     the base model (offline GGUF, or a tar of an HF dir) in <= 60 MiB chunks
    tokenizer/           stays here: collect_adapter puts it next to the adapter

Each top-level folder except ``tokenizer/`` is one carry unit; ``send_plan`` packs units into
``run`` calls under the size limit, and ``finetune/gpu/train.py`` trains from them there.

    python -m finetune.gpu.bundle build --config configs/msft_spider_cpu_v2.json
    python -m finetune.gpu.bundle plan
    python -m finetune.gpu.bundle collect /work/.device/... outputs/gpu/adapter
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from finetune.config import TrainConfig, load_config
from finetune.data.records import Record
from finetune.gpu.train import (
    ADAPTER_MANIFEST,
    ADAPTER_WEIGHTS,
    MANIFEST,
    BundleError,
    join_parts,
    sha256_file,
)
from route_graph.errors import ConfigError, ModelError, RouteGraphError

__all__ = [
    "CALL_LIMIT_BYTES",
    "DEFAULT_CHUNK_BYTES",
    "RunCall",
    "build_bundle",
    "collect_adapter",
    "main",
    "send_plan",
    "working_tree_bytes",
]

MIB = 1 << 20
DEFAULT_CHUNK_BYTES = 60 * MIB  # a chunk plus the working tree must fit one 64 MiB call
CALL_LIMIT_BYTES = 64 * MIB
CALL_MAX_PATHS = 8
FORMAT = 1


@dataclass(frozen=True)
class _Base:
    spec: str  # what the adapter records as its base (what finetune.training.train would record)
    kind: str  # "gguf" or "hf_dir"
    path: Path  # the .gguf file or the HF directory
    tokenizer_dir: Path  # where the tokenizer (with chat template) and config.json are


def _resolve_base(spec: str | None, tokenizer: str | os.PathLike[str] | None) -> _Base:
    """Offline names travel as their GGUF (1/2.6 of the bf16 weights); HF dirs as a tar; a .gguf
    file as it is (its tokenizer then comes from ``tokenizer``)."""
    from finetune.training.train import resolve_base_model
    from route_graph.models import parse_model_spec

    path = Path(spec).expanduser() if spec else None
    if path is not None and path.suffix == ".gguf" and path.is_file():
        if tokenizer is None:
            raise ConfigError("A .gguf base needs --tokenizer DIR (an HF tokenizer with its chat template).")
        return _Base(str(path.resolve()), "gguf", path.resolve(), Path(tokenizer))
    parsed = parse_model_spec(spec)
    local = Path(resolve_base_model(spec))  # the dir finetune.training.train tokenizes with (a stat once converted)
    if parsed.kind == "offline":
        from route_graph.models.cache import ensure_offline_gguf

        return _Base(str(local), "gguf", ensure_offline_gguf(parsed.target), Path(tokenizer or local))
    if parsed.kind == "path":
        return _Base(str(local), "hf_dir", local, Path(tokenizer or local))
    raise ModelError(f"The GPU path needs a local base (offline name, HF dir or .gguf file), not {spec!r}.")


def _num_layers(base: _Base) -> int:
    config = base.tokenizer_dir / "config.json"
    if config.is_file():
        return int(json.loads(config.read_text(encoding="utf-8"))["num_hidden_layers"])
    # a bare .gguf: its header only
    from route_graph.models.adapters import gguf_architecture

    return gguf_architecture(base.path)[1]


def _lora_fields(cfg: TrainConfig, num_layers: int) -> dict[str, Any]:
    """The LoraConfig ``finetune.training.train.lora_config`` builds, as the few JSON fields it sets (a
    peft version on the device that lacks some newer field still reads these)."""
    from finetune.training.train import lora_config

    lora = lora_config(cfg, num_layers)
    targets = lora.target_modules
    return {
        "task_type": "CAUSAL_LM",
        "r": lora.r,
        "lora_alpha": lora.lora_alpha,
        "lora_dropout": lora.lora_dropout,
        "target_modules": targets if isinstance(targets, str) else sorted(targets),
        "layers_to_transform": list(lora.layers_to_transform) if lora.layers_to_transform is not None else None,
    }


def _chunk_file(source: Path, root: Path, chunk_bytes: int, files: dict[str, dict[str, Any]], units: dict[str, list[str]]) -> tuple[list[str], str, int]:
    """Split ``source`` into ``part-NN/base.NNN`` chunks; return their names, the whole sha256 and size."""
    whole, names, size = hashlib.sha256(), [], 0
    with open(source, "rb") as handle:
        for i, block in enumerate(iter(lambda: handle.read(chunk_bytes), b"")):
            name = f"part-{i:02d}/base.{i:03d}"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(block)
            whole.update(block)
            size += len(block)
            files[name] = {"size": len(block), "sha256": hashlib.sha256(block).hexdigest()}
            units[f"part-{i:02d}"] = [name]
            names.append(name)
    return names, whole.hexdigest(), size


def _write_shards(rows: Sequence[dict[str, Any]], tasks: list[str], root: Path, shard_bytes: int, files: dict[str, dict[str, Any]], units: dict[str, list[str]]) -> list[str]:
    """Rows as .npz shards (ids + loss mask). Labels are the ids where the mask is set, which
    ``finetune.training.encoding`` guarantees; checked here so a future encoding change cannot slip by."""
    groups: list[list[dict[str, Any]]] = [[]]
    size = 0
    for row in rows:
        cost = 5 * len(row["input_ids"])  # int32 id + uint8 mask, before compression
        if groups[-1] and size + cost > shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(row)
        size += cost
    names = []
    for i, group in enumerate(g for g in groups if g):
        ids = np.concatenate([np.asarray(r["input_ids"], dtype=np.int64) for r in group])
        labels = np.concatenate([np.asarray(r["labels"], dtype=np.int64) for r in group])
        mask = labels != -100
        if not np.array_equal(labels[mask], ids[mask]) or ids.max(initial=0) >= 2**31:
            raise ConfigError("Encoded labels are not the ids under a mask; the GPU path's shard format cannot hold them.")
        offsets = np.cumsum([0] + [len(r["input_ids"]) for r in group], dtype=np.int64)
        name = f"data-{i:02d}/shard-{i:02d}.npz"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        with open(root / name, "wb") as handle:
            np.savez_compressed(
                handle, ids=ids.astype(np.int32), mask=mask.astype(np.uint8), offsets=offsets,
                task=np.asarray([tasks.index(r["task"]) for r in group], dtype=np.uint8),
            )
        files[name] = {"size": (root / name).stat().st_size, "sha256": sha256_file(root / name)}
        units[f"data-{i:02d}"] = [name]
        names.append(name)
    return names


def _copy_gguf_package(root: Path, files: dict[str, dict[str, Any]], units: dict[str, list[str]]) -> str:
    """The installed gguf package and its dist-info under meta/pylib (pure python, ~1 MiB)."""
    import importlib.metadata

    import gguf

    pylib = root / "meta" / "pylib"
    shutil.copytree(Path(gguf.__file__).parent, pylib / "gguf", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = importlib.metadata.distribution("gguf")
    info = pylib / f"gguf-{dist.version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(dist.read_text("METADATA") or f"Name: gguf\nVersion: {dist.version}\n", encoding="utf-8")
    for path in sorted(p for p in pylib.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        files[name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
        units["meta"].append(name)
    return "meta/pylib"


def build_bundle(
    records: str | os.PathLike[str] | Sequence[Record] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] = ".gpu_bundle",
    cfg: TrainConfig | None = None,
    *,
    base_model: str | None = None,
    tokenizer: str | os.PathLike[str] | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    shard_bytes: int = DEFAULT_CHUNK_BYTES,
) -> Path:
    """Write the bundle for training ``cfg`` on ``records`` to ``out_dir``; return the manifest path.

    ``base_model`` (default ``cfg.base_model``): an offline name (its GGUF travels), an HF model
    directory (tarred), or a .gguf file (with ``tokenizer``: an HF tokenizer directory).
    """
    from transformers import AutoTokenizer

    from finetune.training.train import build_training_set, load_records

    cfg = cfg or TrainConfig()
    if cfg.method != "lora":
        raise ConfigError("The GPU path trains LoRA adapters only (train.method=lora); the result must come back in 64 MiB.")
    base = _resolve_base(base_model if base_model is not None else cfg.base_model, tokenizer)
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()) and not (root / MANIFEST).is_file():
        raise ConfigError(f"{root} exists and is not a GPU bundle; pick another --out.")
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)

    tok = AutoTokenizer.from_pretrained(str(base.tokenizer_dir))
    if not getattr(tok, "chat_template", None):
        raise ModelError(f"The tokenizer in {base.tokenizer_dir} has no chat template; MSFT trains chat models.")
    if tok.pad_token_id is None:  # as finetune.training.train does
        tok.pad_token = tok.eos_token
    rows, mix = build_training_set(load_records(records), tok, cfg)
    if not rows:
        raise ConfigError(f"No training record fits max_length={cfg.max_length}; raise it or use truncation='truncate'.")
    tok.save_pretrained(str(root / "tokenizer"))

    files: dict[str, dict[str, Any]] = {}
    units: dict[str, list[str]] = {"meta": []}
    tasks = sorted({r["task"] for r in rows})
    shards = _write_shards(rows, tasks, root, shard_bytes, files, units)
    pylib = _copy_gguf_package(root, files, units) if base.kind == "gguf" else None
    if base.kind == "gguf":
        chunks, sha, size = _chunk_file(base.path, root, chunk_bytes, files, units)
        blob = base.path.name
    else:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            tar_path = Path(tmp) / "base.tar"
            with tarfile.open(tar_path, "w") as archive:
                for path in sorted(p for p in base.path.iterdir() if p.is_file()):
                    archive.add(path, arcname=path.name)
            chunks, sha, size = _chunk_file(tar_path, root, chunk_bytes, files, units)
        blob = "base.tar"
    hp = {
        k: getattr(cfg, k)
        for k in ("learning_rate", "scheduler", "warmup_steps", "weight_decay", "epochs", "max_steps",
                  "batch_size", "grad_accum", "seed", "max_length", "group_by_length")
    }
    manifest = {
        "format": FORMAT,
        "base": {"spec": base.spec, "kind": base.kind, "file": blob, "size": size, "sha256": sha, "chunks": chunks},
        "lora": _lora_fields(cfg, _num_layers(base)),
        "train": hp,
        "data": {
            "examples": len(rows),
            "tokens": sum(r["length"] for r in rows),
            "completion_tokens": sum(sum(1 for x in r["labels"] if x != -100) for r in rows),
            "pad_token_id": int(tok.pad_token_id),
            "tasks": tasks,
            "mix": mix.to_dict(),
            "shards": shards,
        },
        "pylib": pylib,
        "train_config": dataclasses.asdict(cfg),  # for the record; the device reads "train" and "lora"
        "not_on_the_gpu": ["prefix_groups (plain padded batches of batch_size)", "checkpoints/resume", "full fine-tuning"],
        "units": units,
        "files": files,
    }
    (root / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return root / MANIFEST


# ------------------------------------------------------------------------------------- sending
@dataclass(frozen=True)
class RunCall:
    """One call of the remote ``run`` tool."""

    carry: list[str]
    command: str
    timeout_s: int
    carried_bytes: int


def working_tree_bytes(repo: str | os.PathLike[str]) -> int:
    """Bytes of what every call sends besides carry: tracked and untracked-not-ignored files."""
    names = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo, capture_output=True, check=True,
    ).stdout.split(b"\0")
    root = Path(repo)
    return sum((root / n.decode()).stat().st_size for n in names if n and (root / n.decode()).is_file())


def _unit_bytes(root: Path, manifest: dict[str, Any], unit: str) -> int:
    extra = (root / MANIFEST).stat().st_size if unit == "meta" else 0
    return extra + sum(manifest["files"][name]["size"] for name in manifest["units"][unit])


def send_plan(
    bundle: str | os.PathLike[str] = ".gpu_bundle",
    *,
    minutes: float = 8.0,
    repo: str | os.PathLike[str] | None = None,
    tree_bytes: int | None = None,
) -> list[RunCall]:
    """The ``run`` calls that send the bundle and train: units packed first-fit (largest first)
    under 64 MiB minus the working tree, 'meta' in the first call so every call can ``--check``
    what has arrived, and training in the last one. Run them back to back: the machine keeps
    ignored files only while it stays warm (about 30 s idle)."""
    root = Path(bundle).resolve()
    if repo is None:
        repo = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root.parent, capture_output=True, text=True, check=True).stdout.strip()
    repo = Path(repo).resolve()
    rel = root.relative_to(repo).as_posix()  # carry paths are relative to the repository root
    manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    tree = working_tree_bytes(repo) if tree_bytes is None else tree_bytes
    room = CALL_LIMIT_BYTES - tree - MIB  # a MiB of slack for files that change between calls
    sizes = {unit: _unit_bytes(root, manifest, unit) for unit in manifest["units"]}
    too_big = [u for u, s in sizes.items() if s > room]
    if too_big:
        raise ConfigError(
            f"Units {too_big} exceed the {room / MIB:.1f} MiB a call can carry next to the {tree / MIB:.1f} MiB "
            "working tree; rebuild with a smaller chunk size."
        )
    calls: list[list[str]] = []
    for unit in sorted(sizes, key=lambda u: (u != "meta", -sizes[u])):
        fit = next((c for c in calls if sum(sizes[u] for u in c) + sizes[unit] <= room and len(c) < CALL_MAX_PATHS), None)
        if fit is None:
            calls.append([unit])
        else:
            fit.append(unit)
    check = f"python3 finetune/gpu/train.py --bundle {rel} --check"
    train = f"PYTHONUNBUFFERED=1 python3 finetune/gpu/train.py --bundle {rel} --out \"$OUT\" --minutes {minutes:g}"
    out = []
    for i, units in enumerate(calls):
        last = i == len(calls) - 1
        out.append(RunCall(
            carry=[f"{rel}/{u}" for u in units],
            command=train if last else check,
            timeout_s=min(600, int(minutes * 60) + 60) if last else 120,
            carried_bytes=sum(sizes[u] for u in units),
        ))
    return out


# ------------------------------------------------------------------------------------ receiving
def collect_adapter(files_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, bundle: str | os.PathLike[str] | None = ".gpu_bundle") -> Path:
    """Join the adapter parts the device wrote to ``$OUT`` (each part and the whole checked
    against ``adapter_manifest.json``) into a PEFT adapter directory, with the bundle's tokenizer
    and the device's train_summary.json beside it. ``load_chat_model("BASE+OUT")`` loads it."""
    from route_graph.models.adapters import adapter_config

    src, dest = Path(files_dir), Path(out)
    record_path = src / ADAPTER_MANIFEST
    if not record_path.is_file():
        raise BundleError(f"No {ADAPTER_MANIFEST} in {src}: did the training call finish? (see its output)")
    record = json.loads(record_path.read_text(encoding="utf-8"))
    dest.mkdir(parents=True, exist_ok=True)
    parts = [(src / p["name"], p["sha256"]) for p in record["parts"]]
    missing = [str(p) for p, _ in parts if not p.is_file()]
    if missing:
        raise BundleError(f"Adapter parts missing: {missing}.")
    join_parts(parts, dest / ADAPTER_WEIGHTS, record["sha256"])
    shutil.copyfile(src / "adapter_config.json", dest / "adapter_config.json")
    if (src / "train_summary.json").is_file():
        shutil.copyfile(src / "train_summary.json", dest / "train_summary.json")
    if bundle is not None and (Path(bundle) / "tokenizer").is_dir():
        for path in (Path(bundle) / "tokenizer").iterdir():
            shutil.copyfile(path, dest / path.name)
    adapter_config(dest)  # a ModelError now rather than at load time
    return dest


# ------------------------------------------------------------------------------------------ CLI
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m finetune.gpu.bundle", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="Encode the run's records and pack the base model.")
    build.add_argument("--config", help="Run config (configs/msft_*.json); its train section is used.")
    build.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    build.add_argument("--records", help="records.jsonl (default: <output_dir>/data/records.jsonl of the config).")
    build.add_argument("--base-model", help="Offline name, HF dir or .gguf file (default: train.base_model).")
    build.add_argument("--tokenizer", help="HF tokenizer dir, for a .gguf base.")
    build.add_argument("--out", default=".gpu_bundle")
    build.add_argument("--chunk-mib", type=float, default=DEFAULT_CHUNK_BYTES / MIB)
    plan = sub.add_parser("plan", help="Print the run calls (carry lists and commands).")
    plan.add_argument("--bundle", default=".gpu_bundle")
    plan.add_argument("--minutes", type=float, default=8.0)
    collect = sub.add_parser("collect", help="Join the adapter parts a training call returned.")
    collect.add_argument("files_dir")
    collect.add_argument("out")
    collect.add_argument("--bundle", default=".gpu_bundle")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            run = load_config(args.config, args.set)
            records = args.records or str(Path(run.output_dir) / "data" / "records.jsonl")
            if not Path(records).is_file():
                raise ConfigError(f"No records at {records}: run `route-finetune synth` first or pass --records.")
            manifest = build_bundle(records, args.out, run.train, base_model=args.base_model,
                                    tokenizer=args.tokenizer, chunk_bytes=int(args.chunk_mib * MIB), shard_bytes=int(args.chunk_mib * MIB))
            data = json.loads(manifest.read_text())
            sizes = {u: round(sum(data["files"][n]["size"] for n in names) / MIB, 2) for u, names in data["units"].items()}
            print(json.dumps({"manifest": str(manifest), "examples": data["data"]["examples"], "tokens": data["data"]["tokens"], "unit_mib": sizes}, indent=1))
        elif args.command == "plan":
            for i, call in enumerate(send_plan(args.bundle, minutes=args.minutes), start=1):
                print(json.dumps({"call": i, "carry": call.carry, "command": call.command, "timeout_s": call.timeout_s,
                                  "carried_mib": round(call.carried_bytes / MIB, 1)}))
            print(json.dumps({"then": f"python -m finetune.gpu.bundle collect FILES_AT OUTPUT_DIR --bundle {args.bundle}",
                              "note": "send the calls back to back: the machine keeps carried folders only while warm"}))
        else:
            print(collect_adapter(args.files_dir, args.out, bundle=args.bundle))
    except (RouteGraphError, BundleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
