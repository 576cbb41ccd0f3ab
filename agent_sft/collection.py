"""`agent_sft.collect(cfg)`: what `agent-sft collect` does, as a library call.

    import agent_sft
    from agent_sft.config import load_config

    result = agent_sft.collect(load_config(None, ["env.num_episodes=8", "output.dir=alfworld_sft"]))
    print(result.stats["success_rate"], result.folder)

It checks the config, opens (or resumes) the dataset folder, plays the planned episodes with the
configured policy, finalizes the folder (compaction, stats, card), exports for verl when asked
(`output.export_dir`, `COLLECT_SFT`) and pushes to the Hub when asked (`output.push_to_hub`). Every error
the user can fix is an `agent_sft.errors.AgentSFTError`; Ctrl-C (or SIGTERM turned into a
KeyboardInterrupt) seals the finished episodes before the interrupt goes on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from agent_sft.config import CollectConfig, ConfigError, load_config, to_dict, validate
from agent_sft.dataset.atomic import disk_full_error, is_disk_full
from agent_sft.errors import AgentSFTError, DiskFullError
from agent_sft.policies.registry import check_model_folder, model_kinds, policy_kind, precheck_policy


@dataclasses.dataclass
class CollectResult:
    """What a collection did: the folder's statistics after it, this run's figures, exports and pushes."""

    folder: str
    stats: dict  # the whole folder's statistics (meta/stats.json)
    run: dict  # this run: episodes played, skipped, played twice, errors, timings
    export_counts: dict | None = None  # verl export (output.export_dir), when asked
    pushed_url: str | None = None  # the Hub commit, when output.push_to_hub was set


def precheck(cfg: CollectConfig) -> str:
    """Checks that need no environment: the envs and their options, installed engines, the model
    folder, the prompt templates.

    Returns:
        The canonical name of the run's env (of the first env of a mix).

    Raises:
        ConfigError: naming the key and what it may be.
    """
    from agent_sft.config.lanes import lanes
    from agent_sft.prompts import PromptError, resolve_template
    from agent_sft.rollout import backend

    run = lanes(cfg)  # unknown envs, bad options (paths, task types), experts, counts
    if prepare_envs(cfg, run):
        run = lanes(cfg)
    for lane in run:
        missing = lane.spec.missing_packages()
        if missing:
            where = "env.env_name" if len(run) == 1 else f"env.mix.{lane.label}"
            raise ConfigError(f"{where}: environment {lane.name!r} needs {', '.join(missing)}, which is not "
                              f"installed: {lane.spec.install_hint()}")
        backend(cfg.env.backend, lane.spec)  # an unknown backend, or threads for an env that may not share a process
        if policy_kind(cfg) == "expert" and not lane.played.has_expert:
            where = "env.env_name" if len(run) == 1 else f"env.mix.{lane.label}"
            raise ConfigError(f"{where}: {lane.name} has no expert to replay (its servers give no plan); "
                              f"use a model policy (policy.type={'|'.join(model_kinds())})")
        try:
            resolve_template(lane.name, cfg.prompt.style, lane.template)
        except PromptError as err:
            raise ConfigError(str(err)) from None
    from agent_sft.dataset.layout import check_out_folder

    for key, out, what in (("output.dir", cfg.output.dir, "dataset folder"),
                           ("output.export_dir", cfg.output.export_dir, "export folder")):
        if out:
            try:
                check_out_folder(out, what)
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}") from None
    check_model_folder(cfg.policy)
    return run[0].name


def prepare_envs(cfg: CollectConfig, run: list) -> bool:
    """Run each env's `prepare` hook (an env server is reached, and what it serves is written into the
    env's options); True when an option was set."""
    from agent_sft.envs.specs import load_entry_point

    changed = False
    for lane in run:
        if lane.spec.prepare is None:
            continue
        updates = load_entry_point(lane.spec.prepare)(lane.options) or {}
        if updates:
            target = cfg.env.mix[lane.label] if cfg.env.mix else cfg.env.options.setdefault(lane.spec.name, {})
            target.update(updates)
            changed = True
    return changed


def collect(
    cfg: CollectConfig | str | list[str] | None = None,
    *,
    on_plan: Callable[[Any], None] | None = None,
    on_episode: Callable[[Any], None] | None = None,
) -> CollectResult:
    """Collect episodes into a dataset folder, resuming it when it exists.

    Args:
        cfg: a `CollectConfig`, a YAML file path, a list of `key=value` overrides, or None (defaults).
        on_plan: called once with the plan (`plan.episodes`, `plan.skipped_done`, `plan.selected_tasks`)
            before the first episode is played.
        on_episode: called with each finished `Episode` after it is handed to the writer (also those
            another process writing the same folder sealed first).

    Returns:
        A `CollectResult`.

    Raises:
        AgentSFTError: a bad config, an unusable folder, a policy or server that cannot be used, a
            filter that raises, a full disk (`DiskFullError`), a failed push (`HubError`).
        KeyboardInterrupt: Ctrl-C or SIGTERM (as the CLI raises it), after sealing the finished episodes;
            its message says how many.
    """
    if isinstance(cfg, CollectConfig):
        validate(cfg)  # a config built in Python gets the checks of a loaded one (again for a loaded one: no change)
    else:
        cfg = load_config(cfg, None) if isinstance(cfg, str) or cfg is None else load_config(None, list(cfg))
    env_name = precheck(cfg)
    repo_id = None
    if cfg.output.push_to_hub:
        from agent_sft.publish import hub

        try:
            repo_id = hub.check_auth(cfg.output.push_to_hub)
        except hub.HubError as err:
            raise hub.HubError(f"output.push_to_hub: {err}").with_hint("") from None
    precheck_policy(cfg.policy)  # the backend's own check, e.g. that its server answers
    writer = open_writer(cfg, env_name)
    added = [0]  # episodes this run handed to the writer (not already sealed by another process)
    try:
        stats, run = _play(cfg, env_name, writer, on_plan, on_episode, added)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM raised as its subclass: same type, saying what was kept
        kept = (f"the {added[0]} episodes this run finished are sealed in {cfg.output.dir}" if _close_quietly(writer)
                else f"what was sealed in {cfg.output.dir} is kept")
        raise type(err)(f"{kept}; run the same command again to play the rest") from None
    except BaseException as err:
        _close_quietly(writer)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(cfg.output.dir) from None
        raise
    result = CollectResult(cfg.output.dir, stats, run)
    if cfg.output.export_dir:
        from agent_sft.publish.exports import export_verl

        result.export_counts = export_verl(cfg.output.dir, cfg.output.export_dir)
    if repo_id:
        from agent_sft.publish import hub

        try:
            result.pushed_url = hub.push_folder(cfg.output.dir, repo_id, private=cfg.output.private)
        except hub.HubError as err:
            raise hub.HubError(f"push to {repo_id} failed: {err}; the folder is complete, retry with "
                               f"`agent-sft push {cfg.output.dir} {repo_id}`").with_hint("") from None
    return result


def _close_quietly(writer: Any) -> bool:
    """Seal what the writer buffers; False when that failed too (the run is already failing)."""
    try:
        writer.close()
        return True
    except Exception:  # noqa: BLE001 - the error being reported is the first one
        return False


def open_writer(cfg: CollectConfig, env_name: str):
    """Open (or resume) `output.dir` for this config: refused when the folder was collected with another."""
    from agent_sft.config import FilterConfig
    from agent_sft.dataset.fingerprint import of_config
    from agent_sft.dataset.writer import BuildSpec, DatasetWriter
    from agent_sft.rollout import package_versions

    filters = dataclasses.asdict(cfg.filters)
    # Filters and style left at their defaults keep what the folder has (e.g. a later `agent-sft build`).
    default = filters == dataclasses.asdict(FilterConfig()) and cfg.output.sft_style == "auto"
    try:
        return DatasetWriter.open(
            cfg.output.dir,
            fingerprint=of_config(cfg),
            meta=to_dict(cfg),
            build=None if default else BuildSpec(style=cfg.output.sft_style, filters=filters),
            allow_config_change=cfg.output.allow_config_change,
            flush_every_s=cfg.output.flush_every_s,
            flush_every_episodes=cfg.output.flush_every_episodes,
            versions=package_versions(env_name, policy_kind(cfg)),
            env_versions=env_versions(cfg),
        )
    except AgentSFTError as err:
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(cfg.output.dir) from None
        raise
    except (OSError, ImportError) as err:
        if is_disk_full(err):
            raise disk_full_error(cfg.output.dir) from None
        # e.g. a filters.tokenizer that does not load
        raise ConfigError(f"cannot open {cfg.output.dir}: {type(err).__name__}: {err}") from None


def env_versions(cfg: CollectConfig) -> dict[str, dict[str, str]]:
    """Each env's package versions with the policy's, by its label in the run (as its episodes record them)."""
    from agent_sft.config.lanes import lanes
    from agent_sft.rollout import package_versions

    out = {}
    for lane in lanes(cfg):
        versions = package_versions(lane.name, policy_kind(cfg))
        versions.update(lane.played.packages)  # an env server's: what it runs
        out[lane.label] = versions
    return out


def _play(cfg: CollectConfig, env_name: str, writer: Any, on_plan: Callable | None, on_episode: Callable | None,
          added: list[int]) -> tuple[dict, dict]:
    from agent_sft.rollout import Collector
    from agent_sft.rollout import policy as run_policy

    if cfg.scale.backend == "ray":
        from agent_sft.scale.ray_run import RayCollector

        policy, collector = None, RayCollector(cfg, env_name)  # the policy lives in each collector actor
    else:
        policy = run_policy.make_run_policy(cfg, env_name)
        collector = Collector(cfg, policy)
    try:
        with collector as c:
            plan = c.plan(writer.done_ids)
            if on_plan is not None:
                on_plan(plan)
            for ep in c.run(plan):
                added[0] += bool(writer.add(ep))
                if on_episode is not None:
                    on_episode(ep)
            st = c.stats
    finally:
        if policy is not None:
            policy.close()
    writer.close()  # seals the rest: from here on the writer knows every episode another process sealed first
    wall = max(st.wall_s, 1e-9)
    run = {
        "episodes": st.episodes,
        "skipped_done": plan.skipped_done,
        "played_twice": writer.duplicates_skipped,
        "steps": st.steps,
        "errors": st.errors,
        "workers_replaced": st.workers_replaced,
        "wall_s": round(st.wall_s, 3),
        "startup_s": round(st.startup_s, 3),
        "env_s": round(st.env_s, 3),
        "policy_s": round(st.policy_s, 3),
        "episodes_per_s": st.episodes / wall,
        "steps_per_s": st.steps / wall,
        "parallel_envs": cfg.data.val_batch_size,
        "mode": st.mode,
        "policy_requests": st.requests,
        "prompt_tokens": st.prompt_tokens,
        "completion_tokens": st.completion_tokens,
        "prefix_cache_hit_rate": st.prefix_cache_hit_rate(),
        "env_backend": st.env_backend,
        "workers_started": st.workers_started,
        "shard": cfg.output.shard,
    }
    if len(plan.per_lane) > 1:
        run["per_env"] = st.per_env
    cluster = getattr(collector, "cluster", None)
    if cluster is not None:  # scale.backend=ray: every collector's share
        run["backend"] = "ray"
        run["collectors"] = cluster.collectors
        run["actors_restarted"] = cluster.actors_restarted
        run["requeued_episodes"] = cluster.requeued
    return writer.finalize(summary=run), run
