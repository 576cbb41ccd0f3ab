#!/usr/bin/env bash
# Create (or reuse) a virtualenv holding verl 0.9.1 and print its python.
#
#   bash .ci/verl_env.sh [DIR]        # DIR defaults to ~/.cache/agent-sft/verl-venv (where the tests look)
#   export AGENT_SFT_VERL_PYTHON="$(bash .ci/verl_env.sh DIR)"   # for another DIR
#
# `bash scripts/install.sh --test` runs it with the default DIR.
# verl pins an older transformers than agent-sft's own environment, so it lives apart. Plain
# `pip install verl` pulls a CUDA torch; verl goes in with --no-deps and its data-path dependencies are
# named here. A venv that already holds exactly these requirements is reused in well under a second.
# Progress goes to stderr; stdout is only the python path.
set -euo pipefail

DIR="$(realpath -m "${1:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-sft/verl-venv}")"
BASE_PYTHON="${AGENT_SFT_BASE_PYTHON:-python3}"

VERL_REQ="verl==0.9.1"
DEPS=(
    "torch==2.13.0"
    "transformers>=5.5.3,<5.11,!=5.6.0"
    "tensordict>=0.8,<=0.10.0,!=0.9.0"
    pandas
    pyarrow
    omegaconf
    datasets
    pillow
    ray
)
SPEC="$(printf '%s\n' "$VERL_REQ --no-deps" "${DEPS[@]}")"
STAMP="$DIR/.agent-sft-verl-env"
PY="$DIR/bin/python"

ready() {
    [[ -x "$PY" && -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$SPEC" ]] || return 1
    "$PY" - <<'EOF' >/dev/null 2>&1
import importlib.metadata as md
assert md.version("verl") == "0.9.1"
for dist in ("torch", "transformers", "tensordict", "pandas", "pyarrow", "omegaconf", "datasets", "pillow", "ray"):
    md.version(dist)
EOF
}

pip_install() {
    local rc=0
    "$PY" -m pip install --quiet "$@" >&2 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2) || rc=$?
    return "$rc"
}

mkdir -p "$(dirname "$DIR")"
exec 9>"$DIR.lock"
flock 9

if ready; then
    echo "$PY"
    exit 0
fi

echo "verl_env: creating $DIR" >&2
start=$SECONDS
rm -rf "$DIR"
"$BASE_PYTHON" -m venv "$DIR"
pip_install --upgrade pip
pip_install "$VERL_REQ" --no-deps
# pip reports verl's training-only requirements (accelerate, hydra-core, peft, ...) as missing: the
# dataset classes do not need them.
pip_install "${DEPS[@]}"
"$PY" -c "import verl.utils.dataset.multiturn_sft_dataset, verl.utils.dataset.rl_dataset" >&2
printf '%s' "$SPEC" >"$STAMP"
echo "verl_env: ready in $((SECONDS - start)) s" >&2
echo "$PY"
