"""scripts/llama_cpp_cmake_args.py: the README's llama.cpp build flags follow the CPU's flags."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "llama_cpp_cmake_args.py"
_spec = importlib.util.spec_from_file_location("llama_cpp_cmake_args", SCRIPT)
assert _spec and _spec.loader
build_args = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_args)

AVX512_BASE = {"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"}
HASWELL = {"sse4_2", "avx", "avx2", "fma", "f16c", "bmi2"}
SAPPHIRE_RAPIDS = HASWELL | AVX512_BASE | {"avx512vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile"}


def _options(args: str) -> dict[str, str]:
    return dict(part[2:].split("=", 1) for part in args.split())


def test_avx2_only_cpu_gets_the_portable_build():
    options = _options(build_args.cmake_args(HASWELL, "x86_64"))
    assert options["GGML_NATIVE"] == "OFF"
    assert options["GGML_AVX2"] == options["GGML_FMA"] == options["GGML_F16C"] == "ON"
    assert all(options[name] == "OFF" for name in options if name.startswith("GGML_AVX512"))
    assert options["GGML_AVX_VNNI"] == "OFF"


def test_avx512_cpu_gets_its_extensions_and_never_amx():
    options = _options(build_args.cmake_args(SAPPHIRE_RAPIDS, "x86_64"))
    for name in ("GGML_AVX512", "GGML_AVX512_VBMI", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX_VNNI"):
        assert options[name] == "ON", name
    assert not any(name.startswith("GGML_AMX") for name in options)


@pytest.mark.parametrize("missing", sorted(AVX512_BASE))
def test_avx512_needs_every_subset_the_compiler_flags_name(missing):
    options = _options(build_args.cmake_args(HASWELL | AVX512_BASE - {missing}, "x86_64"))
    assert options["GGML_AVX512"] == "OFF"


def test_avx512_extension_without_avx512f_stays_off():
    options = _options(build_args.cmake_args(HASWELL | {"avx512_vnni", "avx512_bf16"}, "x86_64"))
    assert options["GGML_AVX512_VNNI"] == options["GGML_AVX512_BF16"] == "OFF"


def test_unreadable_flags_and_other_architectures():
    assert build_args.cmake_args(None, "x86_64") == build_args.PORTABLE_ARGS
    assert build_args.cmake_args(SAPPHIRE_RAPIDS, "aarch64") == "-DGGML_NATIVE=OFF"


def test_cpuinfo_parsing(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert build_args.cpu_flags(cpuinfo) == {"fpu", "avx2", "fma"}
    assert build_args.cpu_flags(tmp_path / "absent") is None
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    assert build_args.cpu_flags(tmp_path / "noflags") is None


def test_script_prints_one_line_of_cmake_options():
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True).stdout
    assert out.endswith("\n") and out.count("\n") == 1
    assert all(part.startswith("-DGGML_") for part in out.split())
