#!/usr/bin/env bash
# The unit suite on the lowest versions pyproject.toml allows for the LangChain/LangGraph stack.
#
# A virtualenv on top of the installed environment (--system-site-packages: torch, llama.cpp and
# the rest are reused) pins langgraph, langchain-core and their partner packages to the lower bounds
# in pyproject.toml, then runs `pytest -m "not slow and not server"`. Run from the repository root after the
# README's test install; CI runs it after the main suite.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-/tmp/route-graph-lowest}"
python -m venv --system-site-packages "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check \
  "langgraph==1.0.2" "langgraph-prebuilt==1.0.2" "langchain-core==1.0.0" "langchain==1.0.0" \
  "langchain-openai==1.0.0" "langchain-anthropic==1.0.0" "langchain-ollama==1.0.0"
"$venv/bin/python" - <<'PY'
from importlib.metadata import version
print("lowest:", {n: version(n) for n in ("langgraph", "langchain-core", "langchain", "langchain-openai")})
PY
# The `server` tests start `langgraph dev`, whose langgraph-api (the [studio] extra, newest) needs a
# newer langgraph-sdk than langgraph 1.0.2 brings; they test that server, not route-graph's bounds.
"$venv/bin/python" -m pytest -m "not slow and not server" -q -p no:cacheprovider "${@:2}"
