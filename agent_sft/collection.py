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

from agent_sft.config import CollectConfig, ConfigError, load_config
from agent_sft.dataset.atomic import disk_full_error, is_disk_full
from agent_sft.errors import AgentSFTError, DiskFullError
from agent_sft.policies.registry import check_model_folder, model_kinds, precheck_policy
from agent_sft.run import Run, for_folder, resolve


@dataclasses.dataclass
class CollectResult:
    """What a collection did: the folder's statistics after it, this run's figures, exports and pushes."""

    folder: str
    stats: dict  # the whole folder's statistics (meta/stats.json)
    run: dict  # this run: episodes played, skipped, played twice, errors, timings
    export_counts: dict | None = None  # verl export (output.export_dir), when asked
    pushed_url: str | None = None  # the Hub commit, when output.push_to_hub was set


def precheck(run: Run) -> None:
    """Checks that need no environment beyond what `resolve` asked: installed engines, the pool backend,
    an expert to replay, the output folders, the model folder.

    Raises:
        ConfigError: naming the key and what it may be.
    """
    from agent_sft.dataset.layout import check_out_folder
    from agent_sft.rollout import backend

    cfg = run.cfg
    for lane in run.lanes:
        where = "env.env_name" if len(run.lanes) == 1 else f"env.mix.{lane.label}"
        missing = lane.spec.missing_packages()
        if missing:
            raise ConfigError(f"{where}: environment {lane.name!r} needs {', '.join(missing)}, which is not "
                              f"installed: {lane.spec.install_hint()}")
        backend(cfg.env.backend, lane.spec)  # an unknown backend, or threads for an env that may not share a process
        if run.policy_kind == "expert" and not lane.played.has_expert:
            raise ConfigError(f"{where}: {lane.name} has no expert to replay (its servers give no plan); "
                              f"use a model policy (policy.type={'|'.join(model_kinds())})")
    for key, out, what in (("output.dir", cfg.output.dir, "dataset folder"),
                           ("output.export_dir", cfg.output.export_dir, "export folder")):
        if out:
            try:
                check_out_folder(out, what)
            except ConfigError as err:
                raise ConfigError(f"{key}: {err}") from None
    check_model_folder(cfg.policy)


def collect(
    cfg: CollectConfig | Run | str | list[str] | None = None,
    *,
    on_plan: Callable[[Any], None] | None = None,
    on_episode: Callable[[Any], None] | None = None,
) -> CollectResult:
    """Collect episodes into a dataset folder, resuming it when it exists.

    Args:
        cfg: a `CollectConfig`, a resolved `agent_sft.run.Run`, a YAML file path, a list of `key=value`
            overrides, or None (defaults).
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
    if not isinstance(cfg, (CollectConfig, Run)):
        cfg = load_config(cfg, None) if isinstance(cfg, str) or cfg is None else load_config(None, list(cfg))
    run = for_folder(resolve(cfg))  # a config built in Python is checked as a loaded one is; the caller's is not changed
    precheck(run)
    cfg = run.cfg
    repo_id = None
    if cfg.output.push_to_hub:
        from agent_sft.publish import hub

        try:
            repo_id = hub.check_auth(cfg.output.push_to_hub)
        except hub.HubError as err:
            raise hub.HubError(f"output.push_to_hub: {err}").with_hint("") from None
    precheck_policy(cfg.policy)  # the backend's own check, e.g. that its server answers
    writer = open_writer(run)
    added = [0]  # episodes this run handed to the writer (not already sealed by another process)
    try:
        stats, figures = _play(run, writer, on_plan, on_episode, added)
    except KeyboardInterrupt as err:  # Ctrl-C, or SIGTERM raised as its subclass: same type, saying what was kept
        kept = (f"the {added[0]} episodes this run finished are sealed in {cfg.output.dir}" if _close_quietly(writer)
                else f"what was sealed in {cfg.output.dir} is kept")
        raise type(err)(f"{kept}; run the same command again to play the rest") from None
    except BaseException as err:
        _close_quietly(writer)
        if is_disk_full(err) and not isinstance(err, DiskFullError):
            raise disk_full_error(cfg.output.dir) from None
        raise
    result = CollectResult(cfg.output.dir, stats, figures)
    if cfg.output.export_dir:
        from agent_sft.publish.exports import export_verl

        result.export_counts = export_verl(cfg.output.dir, cfg.output.export_dir)
    if repo_id:
        from agent_sft.config.load import parse_traces
        from agent_sft.publish import hub

        traces = parse_traces(cfg.output.traces)
        try:
            result.pushed_url = hub.push_folder(cfg.output.dir, repo_id, private=cfg.output.private, traces=traces)
        except hub.HubError as err:
            again = f" --traces {traces}" if traces != "auto" else ""
            raise hub.HubError(f"push to {repo_id} failed: {err}; the folder is complete, retry with "
                               f"`agent-sft push {cfg.output.dir} {repo_id}{again}`").with_hint("") from None
    return result


def _close_quietly(writer: Any) -> bool:
    """Seal what the writer buffers; False when that failed too (the run is already failing)."""
    try:
        writer.close()
        return True
    except Exception:  # noqa: BLE001 - the error being reported is the first one
        return False


def open_writer(run: Run):
    """Open (or resume) `output.dir` for this run: refused when the folder was collected with another config."""
    from agent_sft.config import FilterConfig
    from agent_sft.dataset.writer import BuildSpec, DatasetWriter

    cfg = run.cfg
    filters = dataclasses.asdict(cfg.filters)
    # Filters and style left at their defaults keep what the folder has (e.g. a later `agent-sft build`).
    default = filters == dataclasses.asdict(FilterConfig()) and cfg.output.sft_style == "auto"
    try:
        return DatasetWriter.open(
            cfg.output.dir,
            fingerprint=run.fingerprint,
            meta=run.config,
            build=None if default else BuildSpec(style=cfg.output.sft_style, filters=filters),
            allow_config_change=cfg.output.allow_config_change,
            flush_every_s=cfg.output.flush_every_s,
            flush_every_episodes=cfg.output.flush_every_episodes,
            versions=run.env_versions[run.lanes[0].label],
            env_versions=run.env_versions,
            additions=run.additions,
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


def _outcomes(run: Run, writer: Any) -> dict[str, bool] | None:
    """The success of the folder's finished episodes, for a run that samples an env until success."""
    if not any(lane.until_success for lane in run.lanes):
        return None
    from agent_sft.dataset.stopping import finished_outcomes

    return finished_outcomes(writer.path)


def _play(run: Run, writer: Any, on_plan: Callable | None, on_episode: Callable | None,
          added: list[int]) -> tuple[dict, dict]:
    from agent_sft.rollout import Collector
    from agent_sft.rollout import policy as run_policy

    cfg = run.cfg
    if cfg.scale.backend == "ray":
        from agent_sft.scale.ray_run import RayCollector

        policy, collector = None, RayCollector(run)  # the policy lives in each collector actor
    else:
        policy = run_policy.make_run_policy(run)
        collector = Collector(run, policy)
    try:
        with collector as c:
            plan = c.plan(writer.done_ids, _outcomes(run, writer))
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
    figures = {
        "episodes": st.episodes,
        "skipped_done": plan.skipped_done,
        "past_stop": plan.skipped_stopped + st.past_stop,
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
        figures["per_env"] = st.per_env
    cluster = getattr(collector, "cluster", None)
    if cluster is not None:  # scale.backend=ray: every collector's share
        figures["backend"] = "ray"
        figures["collectors"] = cluster.collectors
        figures["actors_restarted"] = cluster.actors_restarted
        figures["requeued_episodes"] = cluster.requeued
    return writer.finalize(summary=figures), figures
