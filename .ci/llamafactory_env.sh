#!/usr/bin/env bash
# Create (or reuse) a virtualenv holding LLaMA-Factory 0.9.3 and print its python.
#
#   bash .ci/llamafactory_env.sh [DIR]   # DIR defaults to ~/.cache/agent-sft/llamafactory-venv (where the tests look)
#   export AGENT_SFT_LLAMAFACTORY_PYTHON="$(bash .ci/llamafactory_env.sh DIR)"   # for another DIR
#
# tests/test_sharegpt.py (extended) reads a ShareGPT export with LLaMA-Factory's own loader in it.
# LLaMA-Factory pins older transformers and datasets than agent-sft's own environment, so it lives apart.
# 0.9.3, not the newest: from 0.9.4 on its data modules import torchaudio, which has no build for torch 2.13.
# Its trl pins numpy<2, which the newest pyarrow refuses: pyarrow stays below 21.
# Its full requirements pull a CUDA torch, gradio and the web UI; it goes in with --no-deps and what its
# data modules import is named here. A venv that already holds exactly these requirements is reused in well
# under a second. Progress goes to stderr; stdout is only the python path.
set -euo pipefail

DIR="$(realpath -m "${1:-${XDG_CACHE_HOME:-$HOME/.cache}/agent-sft/llamafactory-venv}")"
BASE_PYTHON="${AGENT_SFT_BASE_PYTHON:-python3}"

LF_REQ="llamafactory==0.9.3"
DEPS=(
    "torch==2.13.0"
    "transformers>=4.45.0,<=4.52.4,!=4.52.0"
    "tokenizers>=0.19.0,<=0.21.1"
    "datasets>=2.16.0,<=3.6.0"
    "pyarrow>=15,<21"
    "peft>=0.14.0,<=0.15.2"
    "accelerate>=0.34.0,<=1.7.0"
    "trl>=0.8.6,<=0.9.6"
    omegaconf
    pyyaml
    pandas
    sentencepiece
    tiktoken
    protobuf
    einops
    scipy
    pillow
)
SPEC="$(printf '%s\n' "$LF_REQ --no-deps" "${DEPS[@]}")"
STAMP="$DIR/.agent-sft-llamafactory-env"
PY="$DIR/bin/python"

ready() {
    [[ -x "$PY" && -f "$STAMP" ]] || return 1
    [[ "$(cat "$STAMP")" == "$SPEC" ]] || return 1
    "$PY" -c 'import importlib.metadata as md; assert md.version("llamafactory") == "0.9.3"' >/dev/null 2>&1
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

echo "llamafactory_env: creating $DIR" >&2
start=$SECONDS
rm -rf "$DIR"
"$BASE_PYTHON" -m venv "$DIR"
pip_install --upgrade pip
pip_install "$LF_REQ" --no-deps
# pip reports LLaMA-Factory's training and web-UI requirements (gradio, fire, ...) as missing: its data
# modules do not need them.
pip_install "${DEPS[@]}"
"$PY" -c "import llamafactory.data.loader, llamafactory.hparams" >&2
printf '%s' "$SPEC" >"$STAMP"
echo "llamafactory_env: ready in $((SECONDS - start)) s" >&2
echo "$PY"
