"""Build stages over the whole folder: what a build drops by looking at other episodes (`filters.dedup`).

Per-episode filters decide each raw shard's sft rows on their own (`derive`), so a writer derives them as it
seals. A folder-wide stage needs every live episode first: `rederive` works out its drops over the folder,
derives every sft shard again at the next build generation with them and switches to that generation in one
write of meta/info.json, as a new build spec does. `agent-sft build` runs it, and so does a writer's
`finalize` when its build has such a stage; a run's flushes in between follow the per-episode filters.
"""

from __future__ import annotations

import os

from agent_sft.dataset import atomic, dedup, layout
from agent_sft.dataset.derive import SftDeriver
from agent_sft.dataset.layout import BuildSpec
from agent_sft.dataset.rewrite import check_not_corrupt, repair
from agent_sft.records import SPLITS


def active(build: BuildSpec) -> bool:
    """Whether the build has a stage that looks at the whole folder."""
    return dedup.mode(build.filters) != "off"


def rederive(folder: str, build: BuildSpec, info: dict) -> tuple[layout.Scan, SftDeriver]:
    """Derive `sft` again from every live raw shard at the next generation, with the folder-wide stages'
    drops (call under the folder lock, with the folder's info as read under it).

    Returns:
        The folder's scan at the new generation and the deriver that wrote it.
    """
    old = layout.generation(info)
    s = layout.scan(folder, old)
    check_not_corrupt(folder, s)
    dropped, by_env = dedup.find(folder, s, build.filters)
    deriver = SftDeriver(build, dropped)
    new = old + 1
    for split in SPLITS:
        for name in s.raw[split]:
            deriver.write_for(folder, split, name, new)
    info["build"] = {**build.to_dict(), "generation": new}
    if active(build):
        info["stages"] = {"generation": new, "dedup": {env: dict(c) for env, c in sorted(by_env.items())}}
    else:
        info.pop("stages", None)
    atomic.write_json_atomic(os.path.join(folder, layout.INFO), info)
    return repair(folder, layout.scan(folder, new), deriver), deriver
