"""`agent-sft collect`: play episodes with a policy and write a dataset folder.

    agent-sft collect                                   # built-in ALFWorld games, planner expert
    agent-sft collect env.num_episodes=200 loop.parallel=16 output.dir=alfworld_sft
    agent-sft collect --config run.yaml actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct
    COLLECT_SFT=True SFT_SEED=42 agent-sft collect env.env_name=alfworld/AlfredTWEnv

Configuration comes from the defaults, then `--config FILE.yaml`, then `key=value` overrides (the
old and verl-agent spellings work too), then the `COLLECT_SFT`, `SFT_SEED` and `SFT_REQUIRE_SUCCESS` variables.
Run `agent-sft collect --keys` for every key. Running again on the same `output.dir` resumes: only the
episodes missing from the folder are played. Ctrl-C or SIGTERM (`docker stop`, a scheduler) stops the run
after sealing the episodes that finished (exit code 130 or 143). A run whose policy server or env servers
stop working for good (policy.max_consecutive_failures, env.max_consecutive_errors) stops with exit code 3
after sealing what finished; running the same command again plays the rest.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from agent_sft.cli import CLIError
from agent_sft.config import describe, load_config
from agent_sft.run import Run


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. env.num_episodes=100")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with the config (nested or dotted keys)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (one line per 10%% instead)")
    parser.add_argument("--keys", action="store_true", help="list every config key with its default and help, then exit")


def _print_keys() -> None:
    for key, default, help in describe():
        print(f"{key} = {default!r}\n    {help}")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summary_text(stats: dict, run: dict, folder: str) -> str:
    """The end-of-run report: success by task type, rewards, lengths, invalid actions, rows, drops."""
    lines = [
        "",
        f"Collected {run['episodes']} episodes in {run['wall_s']:.1f} s ({run['episodes_per_s']:.2f} episodes/s, "
        f"{run['steps_per_s']:.1f} steps/s, after {run['startup_s']:.1f} s starting the env workers); "
        f"{run['skipped_done']} were already in the folder.",
    ]
    if run.get("played_twice"):
        lines.append(f"{run['played_twice']} episodes were played twice: another collect is writing to this folder and "
                     "sealed them first (each is kept once); use output.shard=i/n to split the work.")
    lines += [
        f"Folder now holds {stats.get('total_episodes', 0)} episodes "
        f"(train {stats['episodes'].get('train', 0)}, validation {stats['episodes'].get('validation', 0)}); "
        f"success rate {_pct(stats.get('success_rate', 0.0))}.",
        "",
        f"  {'task type':<28}{'episodes':>9}{'success':>9}{'mean len':>10}",
    ]
    by_env = stats.get("by_env") or {}
    if len(by_env) > 1:
        lines[-1] = f"  {'env / task type':<28}{'episodes':>9}{'success':>9}{'mean len':>10}"
        for env, e in by_env.items():
            lines.append(f"  {env:<28}{e['episodes']:>9}{_pct(e['success_rate']):>9}{e['mean_length']:>10.1f}")
            for tt, b in e["by_task_type"].items():
                lines.append(f"    {tt:<26}{b['episodes']:>9}{_pct(b['success_rate']):>9}{b['mean_length']:>10.1f}")
    else:
        for tt, b in stats.get("by_task_type", {}).items():
            lines.append(f"  {tt:<28}{b['episodes']:>9}{_pct(b['success_rate']):>9}{b['mean_length']:>10.1f}")
    steps = stats.get("steps", 0)
    invalid = stats.get("invalid_steps", 0)
    lines += [
        "",
        f"  mean final reward {stats.get('mean_final_reward', 0.0):.3f}   mean length {stats.get('mean_length', 0.0):.1f} steps",
        f"  invalid actions   {invalid} of {steps} steps ({_pct(invalid / steps if steps else 0.0)})",
        "  end reasons       " + ", ".join(f"{k} {v}" for k, v in sorted(stats.get("end_reasons", {}).items())),
        f"  sft rows          train {stats['sft_rows'].get('train', 0)}, validation {stats['sft_rows'].get('validation', 0)}",
        "  dropped by filter " + (", ".join(f"{k} {v}" for k, v in sorted(stats.get("drops", {}).items()) if v) or "none"),
    ]
    from agent_sft.dataset.reading import views_lines

    lines += [f"  {line}" for line in views_lines(stats)]
    if run.get("collectors"):
        cs = run["collectors"]
        lines.append(f"  ray collectors    {len(cs)} on {len({c['node'] for c in cs})} nodes, episodes "
                     + ", ".join(str(c["episodes"]) for c in cs)
                     + f"; {run.get('actors_restarted', 0)} restarted, {run.get('requeued_episodes', 0)} episodes played again")
    if run.get("prefix_cache_hit_rate") is not None:
        lines.append(f"  prefix cache      {_pct(run['prefix_cache_hit_rate'])} of {run['prompt_tokens']} prompt tokens "
                     f"reused ({run.get('mode', 'sync')} loop)")
    if run.get("errors"):
        lines.append(f"  errors            {run['errors']} episodes ended in an error ({run['workers_replaced']} env workers replaced)")
    return "\n".join(lines + [""] + load_hint(stats, folder))


def has_sft_rows(stats: dict) -> bool:
    return sum(stats.get("sft_rows", {}).values()) > 0


def load_hint(stats: dict, folder: str) -> list[str]:
    """How to load what the folder holds: the sft config, or, when no episode made an sft row (the
    README then lists no `sft` config to load), the raw one and how to derive sft with other filters."""
    if has_sft_rows(stats):
        return ["Load it with:", f'  datasets.load_dataset("{folder}", "sft")']
    if not stats.get("total_episodes"):
        return [f"{folder} holds no episodes yet."]
    drops = ", ".join(f"{k} {v}" for k, v in sorted(stats.get("drops", {}).items()) if v) or "none"
    return [f"No sft rows: none of the {stats['total_episodes']} episodes passed the filters (dropped by filter: {drops}), "
            "so the folder has no sft config to load. The episodes are in raw:",
            f'  datasets.load_dataset("{folder}", "raw")',
            f"Derive sft again with other filters: agent-sft build {folder} filters.<key>=<value> "
            "(agent-sft build --help lists them)."]


class _Progress:
    """tqdm bar with live success rate, or a line per 10% when there is no terminal or it is off."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.wins, self.t0 = total, 0, 0, time.monotonic()
        self.bar = None
        self._next_line = 0.1
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="ep", desc="collect", dynamic_ncols=True)

    def update(self, success: bool) -> None:
        self.done += 1
        self.wins += bool(success)
        rate = self.wins / self.done
        if self.bar is not None:
            self.bar.set_postfix_str(f"success {_pct(rate)}", refresh=False)
            self.bar.update(1)
        elif self.total and self.done / self.total >= self._next_line:
            el = time.monotonic() - self.t0
            print(f"  {self.done}/{self.total} episodes, success {_pct(rate)}, {self.done / el:.2f} episodes/s", flush=True)
            while self._next_line <= self.done / self.total:
                self._next_line += 0.1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    if args.keys:
        _print_keys()
        return 0
    from agent_sft.collection import collect
    from agent_sft.dataset.filters import FilterError
    from agent_sft.errors import AgentSFTError, DatasetError, DiskFullError, RunFailedError
    from agent_sft.policies import PolicyError
    from agent_sft.run import resolve

    cfg = load_config(args.config, args.overrides)
    progress: list[_Progress] = []

    resolved: list[Run] = []

    def on_plan(plan: Any) -> None:
        _announce(resolved[0], plan)
        progress.append(_Progress(len(plan.episodes), not args.no_progress and sys.stderr.isatty()))

    try:
        resolved.append(resolve(cfg))
        result = collect(resolved[0], on_plan=on_plan, on_episode=lambda ep: progress[0].update(ep.success))
    except AgentSFTError as err:
        hint = err.hint
        if hint is None and isinstance(err, (DatasetError, FilterError, PolicyError, RunFailedError)) \
                and not isinstance(err, DiskFullError):
            hint = fatal_hint(err, cfg.output.dir)
        raise CLIError(f"{err}\n{hint}" if hint else str(err), 3 if isinstance(err, RunFailedError) else 2) from None
    finally:
        for p in progress:
            p.close()
    print(summary_text(result.stats, result.run, cfg.output.dir))
    if result.export_counts is not None:
        print(f"\nverl export (COLLECT_SFT): {cfg.output.export_dir}/ " + ", ".join(f"{k} {v}" for k, v in result.export_counts.items()))
    if result.pushed_url:
        repo_id = cfg.output.push_to_hub
        config = "sft" if has_sft_rows(result.stats) else "raw"
        print(f"\nPushed to {result.pushed_url}\n  datasets.load_dataset(\"{repo_id}\", \"{config}\")")
    return 0


def fatal_hint(err: BaseException, folder: str) -> str:
    """What to do after a run stopped on `err` (a DatasetError, FilterError, PolicyError or RunFailedError)."""
    from agent_sft.dataset.filters import FilterError
    from agent_sft.errors import ConfigMismatchError, CorruptShardError, RunFailedError
    from agent_sft.policies.openai import ServerRefusedError, ServerUnreachableError

    if isinstance(err, ConfigMismatchError):
        return f"Nothing was played. To continue {folder} as it was collected, give the keys above the folder's values."
    if "agent-sft repair" in str(err):
        return "The episodes sealed in the intact shards are kept."
    if isinstance(err, ServerRefusedError) and err.kind == "auth":
        return ("Set the API key in the variable policy.api_key_env names (or fix it), then run the same command "
                "again: the episodes sealed so far are kept and skipped.")
    if isinstance(err, ServerRefusedError):
        return ("Set policy.model to a model the server serves (GET <policy.base_url>/models lists them) or fix "
                "policy.base_url, then run the same command again: the episodes sealed so far are kept and skipped.")
    if isinstance(err, ServerUnreachableError):
        return ("Restart the server (or fix policy.base_url), then run the same command again: the episodes sealed "
                "so far are kept; the others, those whose requests were lost included, are played.")
    if isinstance(err, RunFailedError):
        return ("Fix or restart what failed (the message names it), then run the same command again: the episodes "
                "sealed so far are kept and the error episodes are played again.")
    if isinstance(err, CorruptShardError):
        return f"A shard of {folder} is damaged: run `agent-sft repair {folder}`, then the same command again to resume."
    if isinstance(err, FilterError):
        return ("Fix the filter (filters.*), then run the same command again: the episodes are kept in raw and sft "
                "is derived again with the fixed filter.")
    return "What was sealed is kept; run the same command again to resume."


def _announce(resolved: Run, plan: Any) -> None:
    cfg, run = resolved.cfg, resolved.lanes
    eps = plan.episodes
    parallel = min(cfg.data.val_batch_size, max(1, len(eps)))
    policy = f"policy {resolved.policy_kind}{' ' + cfg.policy.model if cfg.policy.model else ''}"
    if len(run) > 1:
        print(f"Playing {len(eps)} episodes of {len(run)} envs, {parallel} in parallel, {policy}:")
        for lane, part in zip(run, plan.per_lane):
            print(f"  {lane.label:<16} {part['episodes']:>6} episodes over {part['tasks']} tasks of {lane.name}"
                  f" (max {lane.max_steps} steps)")
    else:
        env = run[0].spec
        splits = sorted({t.task.game_split for t in eps})
        notes = [env.card.run_notes[s] for s in splits if s in env.card.run_notes]
        where = "; ".join(notes) if notes else \
            f"{plan.selected_tasks} tasks of {cfg.env.env_name}" + (f" ({', '.join(splits)})" if any(splits) else "")
        print(f"Playing {len(eps)} episodes on {where}, {parallel} envs in parallel, {policy}.")
    if plan.skipped_done:
        print(f"Resuming {cfg.output.dir}: {plan.skipped_done} episodes already there are skipped.")
    if any(lane.until_success for lane in run):
        print(f"Sampling until success: at most {len(eps)} episodes; a task stops once it has its successes"
              + (f" ({plan.skipped_stopped} past a stop already)." if plan.skipped_stopped else "."))
    for j, lane in enumerate(run):
        env = lane.spec
        evals = sorted({t.task.game_split for t in eps if t.lane == j} & set(env.eval_splits))
        if evals:
            print(f"Note: {', '.join(evals)} holds {env.card.title or env.name}'s evaluation games; the dataset card says so.")
