"""llama.cpp raw speed per weight format and flash attention, on this CPU (no graph, no prompts).

The shipped default is Q4_K_M. This requantizes it once into temporary Q8_0 and Q4_0 files
(``llama_model_quantize`` with ``allow_requantize``: a second rounding, so Q4_0 loses accuracy,
which this script does not measure) and times a 1,000-token prefill and 32 decode steps at that
context, with and without flash attention. It answers "would another format pay on this CPU?".

    python benchmarks/llamacpp_formats.py [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def _speed(path: str, threads: int, flash_attn: bool, tokens: list[int] | None) -> tuple[float, float, list[int]]:
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False, flash_attn=flash_attn)
    if tokens is None:
        text = "CREATE TABLE t (a INTEGER, b TEXT, c REAL);\n" * 120
        tokens = llm.tokenize(text.encode(), add_bos=False)[:1000]
    llm.eval(tokens[:16])  # warm-up
    llm.reset()
    started = time.perf_counter()
    llm.eval(tokens)
    prefill = len(tokens) / (time.perf_counter() - started)
    started = time.perf_counter()
    for token in tokens[:32]:
        llm.eval([token])
    decode = 32 / (time.perf_counter() - started)
    del llm
    return prefill, decode, tokens


def main(argv: list[str] | None = None) -> int:
    import llama_cpp

    from route_graph.models.cache import ensure_offline_gguf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    shipped = str(ensure_offline_gguf("qwen2.5-coder-0.5b"))
    print(llama_cpp.llama_print_system_info().decode().strip())
    with tempfile.TemporaryDirectory() as tmp:
        files = {"Q4_K_M (shipped)": shipped}
        for name, ftype in (("Q8_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0), ("Q4_0", llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0)):
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.allow_requantize, params.nthread = ftype, True, args.threads
            out = str(Path(tmp) / f"{name}.gguf")
            if llama_cpp.llama_model_quantize(shipped.encode(), out.encode(), ctypes.byref(params)) != 0:
                raise SystemExit(f"requantizing to {name} failed")
            files[f"{name} (requantized)"] = out
        print("| weights | flash attention | prefill tok/s (1,000 tokens) | decode tok/s (at ~1,000 context) |")
        print("| --- | --- | --- | --- |")
        tokens = None
        for label, path in files.items():
            for flash in (False, True):
                prefill, decode, tokens = _speed(path, args.threads, flash, tokens)
                print(f"| {label} | {'on' if flash else 'off'} | {prefill:.1f} | {decode:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
