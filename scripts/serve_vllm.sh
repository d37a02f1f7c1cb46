#!/usr/bin/env bash
# Serve a model with vLLM's OpenAI-compatible server (CPU by default; see docs/serving.md).
#
#   scripts/serve_vllm.sh                                   # the default model (route-0.5b), port 8000
#   scripts/serve_vllm.sh --no-default-adapter              # the untuned base only
#   scripts/serve_vllm.sh --model ~/merged --name route-ft  # a merged fine-tuned HF directory
#   scripts/serve_vllm.sh --model BASE_DIR --lora route-lora=ADAPTER_DIR   # a LoRA adapter
#   scripts/serve_vllm.sh --detach --port 8001              # return once ready; --stop to end it
#
# It starts `python -m vllm.entrypoints.openai.api_server` on 127.0.0.1, waits until
# GET /v1/models answers, then prints the model spec for route-graph, e.g.
#   openai:http://127.0.0.1:8000/v1#route-0.5b
# and (without --detach) stays in the foreground until Ctrl-C, which stops the server.
#
# Options:
#   --model DIR|HUB_ID   model to serve (default: the offline base's converted directory, from
#                        route_graph.models.ensure_default_model(), made on first use, plus the
#                        default model's packaged ROUTE adapter as the LoRA module route-0.5b)
#   --no-default-adapter without --model: serve the untuned base only (as qwen2.5-coder-0.5b)
#   --name NAME          served model name (default: qwen2.5-coder-0.5b for the default model,
#                        else the directory's base name)
#   --host HOST          bind address (default 127.0.0.1)
#   --port PORT          port (default 8000)
#   --lora NAME=DIR      serve a LoRA adapter as NAME (repeatable); turns on --enable-lora
#   --max-lora-rank R    largest adapter rank to accept (default 16, vLLM's default)
#   --max-model-len N    context length (default 8192: the largest Spider schemas need ~2,300 prompt tokens)
#   --dtype DTYPE        default: bfloat16 where the CPU has AMX/AVX512-BF16 (or on a GPU), else
#                        float32 (bf16 is unusably slow on AVX2-only CPUs)
#   --python PATH        a python that has vllm (default: the venv made by scripts/vllm_env.sh;
#                        on a GPU machine, point this at a python with the CUDA `vllm` package)
#   --timeout S          seconds to wait for readiness (default 300)
#   --log FILE           server log (default: stdout/stderr, or <run dir>/vllm-PORT.log detached)
#   --detach             leave the server running in the background and exit once it is ready
#   --stop               stop a server started with --detach on --port
#   -- ARGS...           passed to vLLM unchanged (e.g. -- --gpu-memory-utilization 0.5)
#
# CPU settings (environment, overridable): VLLM_CPU_OMP_THREADS_BIND (default 0-<nproc-1>),
# VLLM_CPU_KVCACHE_SPACE in GiB (default 2). --enforce-eager is always passed on CPU.
# Prefix caching is on (explicitly): schema linking, the draft, noise correction and the next
# question on the same database share their system + schema prefix.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL=""
NAME=""
HOST="127.0.0.1"
PORT="8000"
LORAS=()
MAX_LORA_RANK="16"
MAX_MODEL_LEN="8192"
DTYPE=""
VPY="${VLLM_PYTHON:-}"
TIMEOUT="300"
LOG=""
DETACH=0
STOP=0
EXTRA=()
DEFAULT_ADAPTER=1
RUN_DIR="${ROUTE_GRAPH_RUN_DIR:-${XDG_RUNTIME_DIR:-/tmp}/route-graph-vllm}"

log() { echo "[serve_vllm] $*" >&2; }
die() { log "error: $*"; exit 2; }
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --model) need "$@"; MODEL="$2"; shift 2 ;;
        --name) need "$@"; NAME="$2"; shift 2 ;;
        --host) need "$@"; HOST="$2"; shift 2 ;;
        --port) need "$@"; PORT="$2"; shift 2 ;;
        --lora) need "$@"; [[ "$2" == *=* ]] || die "--lora takes NAME=DIR"; LORAS+=("$2"); shift 2 ;;
        --max-lora-rank) need "$@"; MAX_LORA_RANK="$2"; shift 2 ;;
        --max-model-len) need "$@"; MAX_MODEL_LEN="$2"; shift 2 ;;
        --dtype) need "$@"; DTYPE="$2"; shift 2 ;;
        --python) need "$@"; VPY="$2"; shift 2 ;;
        --timeout) need "$@"; TIMEOUT="$2"; shift 2 ;;
        --log) need "$@"; LOG="$2"; shift 2 ;;
        --detach) DETACH=1; shift ;;
        --no-default-adapter) DEFAULT_ADAPTER=0; shift ;;
        --stop) STOP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

PIDFILE="$RUN_DIR/vllm-$PORT.pid"

if [[ "$STOP" == 1 ]]; then
    [[ -f "$PIDFILE" ]] || die "no server recorded for port $PORT ($PIDFILE)"
    pgid="$(cat "$PIDFILE")"
    log "stopping process group $pgid"
    kill -TERM -- "-$pgid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 -- "-$pgid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pgid" 2>/dev/null || true
    rm -f "$PIDFILE"
    exit 0
fi

# The python that runs vLLM.
if [[ -z "$VPY" ]]; then
    VPY="$(bash "$ROOT/scripts/vllm_env.sh" | tail -n 1)"
fi
[[ -x "$VPY" ]] || die "no python at $VPY"

# The model: default = the converted offline base plus the default model's packaged adapter as a
# LoRA module (route_graph.models.packaged.DEFAULT_SPEC; needs route-graph[local] here).
SPEC_NAME=""
if [[ -z "$MODEL" ]]; then
    PROJECT_PY="${ROUTE_GRAPH_PYTHON:-python3}"
    log "locating the offline default model (converting it on first use: about a minute)"
    located="$("$PROJECT_PY" -c '
from route_graph.models import ensure_default_model
from route_graph.models.packaged import DEFAULT_SPEC, PACKAGED_MODELS, packaged_adapter_dir
print(f"MODEL={ensure_default_model()}")
tuned = PACKAGED_MODELS.get(DEFAULT_SPEC)
print(f"LORA={tuned.name}={packaged_adapter_dir(tuned.name)}" if tuned else "LORA=")
')" || die "could not prepare the default model; pass --model DIR"
    MODEL="$(grep '^MODEL=' <<< "$located" | tail -n 1 | cut -d= -f2-)"
    NAME="${NAME:-qwen2.5-coder-0.5b}"
    default_lora="$(grep '^LORA=' <<< "$located" | tail -n 1 | cut -d= -f2-)"
    if [[ "$DEFAULT_ADAPTER" == 1 && -n "$default_lora" ]]; then
        SPEC_NAME="${default_lora%%=*}"
        given=0  # --lora route-0.5b=DIR already names it: serve that one, once
        for l in "${LORAS[@]}"; do [[ "${l%%=*}" == "$SPEC_NAME" ]] && given=1; done
        [[ "$given" == 1 ]] || LORAS+=("$default_lora")
    fi
fi
NAME="${NAME:-$(basename "${MODEL%/}")}"
SPEC_NAME="${SPEC_NAME:-$NAME}"  # the name the printed spec uses: the default adapter, or the model

if [[ -z "$DTYPE" ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 || grep -qwE 'amx_bf16|avx512_bf16' /proc/cpuinfo 2>/dev/null; then
        DTYPE="bfloat16"
    else
        DTYPE="float32"
    fi
fi

ARGS=(-m vllm.entrypoints.openai.api_server
      --model "$MODEL" --served-model-name "$NAME"
      --host "$HOST" --port "$PORT"
      --dtype "$DTYPE" --max-model-len "$MAX_MODEL_LEN"
      --enable-prefix-caching)  # vLLM's default too: ROUTE's stages share the schema prefix
if [[ ${#LORAS[@]} -gt 0 ]]; then
    ARGS+=(--enable-lora --max-lora-rank "$MAX_LORA_RANK" --lora-modules "${LORAS[@]}")
fi

# CPU vs GPU: the CPU build is the `vllm-cpu` distribution (its import name is still `vllm`).
if "$VPY" -c 'from importlib.metadata import version; version("vllm-cpu")' 2>/dev/null; then
    ARGS+=(--enforce-eager)
    export VLLM_CPU_OMP_THREADS_BIND="${VLLM_CPU_OMP_THREADS_BIND:-0-$(( $(nproc) - 1 ))}"
    export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
fi
ARGS+=("${EXTRA[@]}")

# No model hub from here: load only local files, send no usage statistics.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}"
export VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1

URL="http://$HOST:$PORT/v1"
if "$VPY" -c "import sys, urllib.request; urllib.request.urlopen('$URL/models', timeout=2); sys.exit(0)" 2>/dev/null; then
    die "something already answers on $URL; pick another --port"
fi

mkdir -p "$RUN_DIR"
log "starting vLLM: $VPY ${ARGS[*]}"
start=$(date +%s)
if [[ "$DETACH" == 1 ]]; then
    LOG="${LOG:-$RUN_DIR/vllm-$PORT.log}"
    setsid "$VPY" "${ARGS[@]}" >"$LOG" 2>&1 < /dev/null &
    pid=$!
    echo "$pid" > "$PIDFILE"   # setsid child: its pid is its process group id
else
    if [[ -n "$LOG" ]]; then "$VPY" "${ARGS[@]}" >"$LOG" 2>&1 & else "$VPY" "${ARGS[@]}" & fi
    pid=$!
    stop_server() {
        trap - INT TERM EXIT
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping vLLM (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    }
    trap stop_server EXIT
    trap 'exit 130' INT TERM
fi

# Wait for /v1/models to list the served name (the default adapter's, when it is served).
while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
        log "vLLM exited before it was ready${LOG:+; see $LOG}"
        [[ -n "$LOG" ]] && tail -n 30 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
    fi
    if "$VPY" - "$URL/models" "$SPEC_NAME" <<'EOF' 2>/dev/null
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
    ids = [m["id"] for m in json.load(r)["data"]]
sys.exit(0 if sys.argv[2] in ids else 1)
EOF
    then
        break
    fi
    if (( $(date +%s) - start > TIMEOUT )); then
        log "not ready after $TIMEOUT s; stopping it"
        if [[ "$DETACH" == 1 ]]; then kill -KILL -- "-$pid" 2>/dev/null || true; rm -f "$PIDFILE"; fi
        exit 1
    fi
    sleep 1
done
log "ready after $(( $(date +%s) - start )) s at $URL"
for l in "${LORAS[@]}"; do log "LoRA adapter: openai:$URL#${l%%=*}"; done
echo "openai:$URL#$SPEC_NAME"
if [[ "$DETACH" == 1 ]]; then
    log "detached (process group $pid, log $LOG); stop with: $0 --stop --port $PORT"
    exit 0
fi
wait "$pid"
