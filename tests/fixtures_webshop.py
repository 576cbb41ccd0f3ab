"""WebShop fixture: a scratch copy of the engine with the test catalog and its index, built once per session.

The engine comes from $WEBSHOP_PATH when set, else from `../shared/third_party/webshop` beside the repository
(princeton-nlp/WebShop's engine, unmodified). Its catalog and index are authored by `webshop_catalog`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ENGINE = REPO.parent / "shared" / "third_party" / "webshop"
# Where else a machine may keep the shared folder (inside the checkout, or the workspace's).
OTHER_PLACES = (REPO / "shared" / "third_party" / "webshop", Path("/work/shared/third_party/webshop"))


def engine_source() -> Path:
    """The WebShop checkout whose engine the tests copy: $WEBSHOP_PATH, else the first shared copy found."""
    if os.environ.get("WEBSHOP_PATH"):
        return Path(os.environ["WEBSHOP_PATH"])
    for place in (DEFAULT_ENGINE, *OTHER_PLACES):
        if (place / "web_agent_site").is_dir():
            return place
    return DEFAULT_ENGINE


@pytest.fixture(scope="session")
def webshop_checkout(tmp_path_factory) -> Path:
    """A usable WebShop checkout: the engine, the test catalog in `data/`, its Lucene index."""
    from webshop_catalog import prepare_checkout

    src = engine_source()
    if not (src / "web_agent_site").is_dir():
        where = ", ".join(str(p) for p in (DEFAULT_ENGINE, *OTHER_PLACES))
        raise RuntimeError(f"no WebShop engine (looked in {where}): set $WEBSHOP_PATH to a WebShop checkout")
    return prepare_checkout(src, tmp_path_factory.mktemp("webshop") / "webshop")
