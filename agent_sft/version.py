"""The package's version (read as `agent_sft.__version__`) and the package versions a run records.

Every episode records the versions of what produced it: these, its env spec's packages
(`EnvSpec.package_versions`) and its policy backend's (`policies.registry.package_versions`).
"""

from __future__ import annotations

__version__ = "0.1.0"


def installed_versions(dists: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Distribution -> installed version, for those of `dists` that are installed (nothing is imported)."""
    from importlib import metadata

    out = {}
    for dist in dists:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def run_versions() -> dict[str, str]:
    """What every run records of itself: the Python and agent-sft versions."""
    import platform

    return {"python": platform.python_version(), "agent_sft": __version__}
