"""Print the CMAKE_ARGS that build llama-cpp-python for this CPU's vector units.

Why a script: llama.cpp's default ``-march=native`` build crashed on an AMX machine (DESIGN.md),
so the README used a fixed portable AVX2 build — which leaves AVX-512 CPUs idle: on 2 AMX Xeon
cores a full MCP question took 11.4 s with AVX2 kernels and 7.75 s with AVX-512 ones
(benchmarks/HISTORY.md, eighth session). This names every x86 extension explicitly, from
/proc/cpuinfo, and nothing the CPU lacks. AMX kernels are never enabled: that build died with
SIGILL ("Illegal instruction") at its first model call on the same Xeon. Runs before the package
is installed, so the standard library only:

    export CMAKE_ARGS="$(python scripts/llama_cpp_cmake_args.py)"

A wheel pip cached from another build is reused as is: ``pip install --no-cache-dir
--force-reinstall --no-deps llama-cpp-python==VERSION`` rebuilds it with the new arguments.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Iterable
from pathlib import Path

__all__ = ["PORTABLE_ARGS", "cmake_args", "cpu_flags"]

#: What the README used on every machine before: AVX2 + FMA + F16C, which any x86 CPU of the last
#: decade has; used as is where the CPU's flags cannot be read.
PORTABLE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"

# (CMake option, /proc/cpuinfo flags it needs). GGML_AVX512 compiles with -mavx512{f,cd,vl,dq,bw}.
_X86_OPTIONS: tuple[tuple[str, frozenset[str]], ...] = (
    ("GGML_AVX2", frozenset({"avx2"})),
    ("GGML_FMA", frozenset({"fma"})),
    ("GGML_F16C", frozenset({"f16c"})),
    ("GGML_AVX_VNNI", frozenset({"avx_vnni"})),
    ("GGML_AVX512", frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})),
    ("GGML_AVX512_VBMI", frozenset({"avx512f", "avx512vbmi"})),
    ("GGML_AVX512_VNNI", frozenset({"avx512f", "avx512_vnni"})),
    ("GGML_AVX512_BF16", frozenset({"avx512f", "avx512_bf16"})),
)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The first CPU's feature flags, or None where they cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return None


def cmake_args(flags: Iterable[str] | None, machine: str | None = None) -> str:
    """CMAKE_ARGS for a CPU with these flags: each x86 extension it has ON, the rest OFF.

    No flags (unreadable): the portable AVX2 build. Not x86: only ``GGML_NATIVE=OFF`` (ggml's
    defaults for that architecture). An AVX-512 sub-extension is only used with AVX-512F.
    """
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return "-DGGML_NATIVE=OFF"
    if flags is None:
        return PORTABLE_ARGS
    have = set(flags)
    args = ["-DGGML_NATIVE=OFF"]
    for option, needs in _X86_OPTIONS:
        args.append(f"-D{option}={'ON' if needs <= have else 'OFF'}")
    return " ".join(args)


if __name__ == "__main__":
    sys.stdout.write(cmake_args(cpu_flags()) + "\n")
