"""The env registry: names and aliases -> `EnvSpec`, filled by `register` calls and by installed packages.

A package adds its envs through the entry-point group `agent_sft.envs`; an entry point names an
`EnvSpec`, a callable that registers envs, or a module that registers them when imported:

    [project.entry-points."agent_sft.envs"]
    maze = "my_pkg.maze:SPEC"

Entry points are loaded only when a name is not found, those named like the env first.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from agent_sft.envs.specs import EnvSpec
from agent_sft.errors import AgentSFTError

ENTRY_POINT_GROUP = "agent_sft.envs"
logger = logging.getLogger(__name__)

_REGISTRY: dict[str, EnvSpec] = {}  # every name and alias -> its spec
_LOADED_ENTRY_POINTS: set[str] = set()


class UnknownEnvError(AgentSFTError, KeyError):
    """No env is registered under the name (the message lists those that are)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def register(name: str | EnvSpec, entry_point: str | Callable[..., Any] | None = None, **fields: Any) -> EnvSpec:
    """Register an env under `name` (and its aliases); returns its spec.

    Args:
        name: the env's name, or a ready `EnvSpec` (then nothing else is given).
        entry_point: `"module:attr"` (imported lazily) or a callable building the env.
        **fields: the other `EnvSpec` fields: `options`, `aliases`, `packages`, `eval_splits`, ...

    Registering a name again replaces its spec.
    """
    if isinstance(name, EnvSpec):
        if entry_point is not None or fields:
            raise TypeError("register(spec) takes no other arguments")
        spec_ = name
    else:
        if entry_point is None:
            raise TypeError(f"register({name!r}) needs an entry_point ('module:attr' or a callable)")
        spec_ = EnvSpec(name=name, entry_point=entry_point, **fields)
    for key in (spec_.name, *spec_.aliases):
        _REGISTRY[key] = spec_
    return spec_


def registered() -> list[str]:
    """Every registered name and alias, sorted."""
    return sorted(_REGISTRY)


def all_specs() -> list[EnvSpec]:
    """Every registered env once (aliases folded), installed packages' entry points included, by name."""
    _load_entry_points("")
    return sorted({s.name: s for s in _REGISTRY.values()}.values(), key=lambda s: s.name)


def find_spec(name: str) -> EnvSpec | None:
    """The spec of `name` or an alias of it, loading installed packages' entry points if needed; None
    when no env has that name."""
    if name not in _REGISTRY:
        _load_entry_points(name)
    return _REGISTRY.get(name)


def spec(name: str) -> EnvSpec:
    """The spec registered under `name` (an alias resolves to its env).

    Raises:
        UnknownEnvError: listing the registered names.
    """
    found = find_spec(name)
    if found is None:
        raise UnknownEnvError(f"unknown environment {name!r}; registered: {', '.join(registered())}")
    return found


def canonical_name(name: str) -> str:
    """The name episode ids use: the env's own name for an alias, and for a name registered with the same
    entry point as an earlier one, that earlier name."""
    target = spec(name)
    for s in _REGISTRY.values():
        if s is target or s.entry_point == target.entry_point:
            return s.name
    return target.name


def make(name: str, **kwargs: Any) -> Any:
    """Build a registered env in this process with `kwargs` as they are.

    Raises:
        UnknownEnvError: for an unknown name.
    """
    return spec(name).make(**kwargs)


def _load_entry_points(name: str) -> None:
    """Load the `agent_sft.envs` entry points not loaded yet: first those named like `name`, then the
    rest until `name` is registered."""
    from importlib import metadata

    try:
        eps = list(metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as err:  # noqa: BLE001 - a broken installed distribution must not break lookups
        logger.warning("cannot read the %s entry points: %s", ENTRY_POINT_GROUP, err)
        return
    family = name.split("/")[0]
    eps.sort(key=lambda ep: ep.name not in (name, family))
    for ep in eps:
        if name and name in _REGISTRY:
            return
        key = f"{ep.name}={ep.value}"
        if key in _LOADED_ENTRY_POINTS:
            continue
        _LOADED_ENTRY_POINTS.add(key)
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - one broken plugin must not hide the others
            logger.warning("cannot load env entry point %s (%s): %s: %s", ep.name, ep.value, type(err).__name__, err)
            continue
        if isinstance(obj, EnvSpec):
            register(obj)
        elif callable(obj):
            obj()
