"""The user's functions an env option names (`module:function` or `path/to/file.py:function`): a gymnasium
env's `obs_to_text`, an OpenEnv env's `obs_to_text` and `success_fn`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def load_function(ref: str) -> Callable[..., Any]:
    """The function `ref` names: `package.module:function` or `path/to/file.py:function`.

    Raises:
        ValueError: `ref` is not of that form, does not import, or names nothing callable.
    """
    where, sep, name = str(ref).rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"{ref!r} is not 'module:function' or 'file.py:function'")
    try:
        if where.endswith(".py"):
            module = _load_file(Path(where).expanduser())
        else:
            module = importlib.import_module(where)
    except Exception as err:  # noqa: BLE001 - any failure of user code is reported, with its cause
        raise ValueError(f"cannot import {where}: {type(err).__name__}: {err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{where} has no function {name!r}")
    return fn


def _load_file(path: Path) -> Any:
    """A Python file loaded as a module (once per process), named after its absolute path."""
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no file {path}")
    key = "_agent_sft_gym_" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module
