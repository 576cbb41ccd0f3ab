"""`agent-sft collect`: play episodes with a policy and write a dataset folder.

    agent-sft collect                                   # built-in ALFWorld games, planner expert
    agent-sft collect env.num_episodes=200 data.val_batch_size=16 output.dir=alfworld_sft
    agent-sft collect --config run.yaml actor_rollout_ref.model.path=Qwen/Qwen2.5-7B-Instruct
    COLLECT_SFT=True SFT_SEED=42 agent-sft collect env.env_name=alfworld/AlfredTWEnv

Configuration comes from the defaults, then `--config FILE.yaml`, then `key=value` overrides (the
verl-agent spellings work too), then the `COLLECT_SFT`, `SFT_SEED` and `SFT_REQUIRE_SUCCESS` variables.
Run `agent-sft collect --keys` for every key. Running again on the same `output.dir` resumes: only the
episodes missing from the folder are played. Ctrl-C or SIGTERM (`docker stop`, a scheduler) stops the run
after sealing the episodes that finished (exit code 130 or 143).
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import hashlib
import os
import shutil
import sys
import time
from typing import Any

from agent_sft.cli import CLIError
from agent_sft.config import CollectConfig, ConfigError, describe, env_options, load_config, to_dict


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. env.num_episodes=100")
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file with the config (nested or dotted keys)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (one line per 10%% instead)")
    parser.add_argument("--keys", action="store_true", help="list every config key with its default and help, then exit")


def fingerprint(cfg: CollectConfig, env_name: str) -> dict[str, Any]:
    """What must not change for a folder to be continued: what decides the episodes' content.

    Not included: how many episodes or samples per task (an episode's content depends on its task,
    seed and sample index only), how many in parallel, timeouts, output and filter settings, and the
    env options its spec leaves out of the fingerprint (e.g. ALFWorld's task_types, a task filter).
    """
    from agent_sft.envs import spec

    e, p, pr = cfg.env, cfg.policy, cfg.prompt
    template = None
    if pr.template:
        with open(pr.template, "rb") as fh:
            template = hashlib.sha256(fh.read()).hexdigest()[:16]
    return {
        "env": {
            "env_name": env_name,
            "seed": e.seed,
            "max_steps": e.max_steps,
            "history_length": e.history_length,
            **spec(e.env_name).fingerprint(env_options(cfg)),
        },
        "prompt": {"style": pr.style, "template_sha256": template, "system": pr.system, "require_think": pr.require_think},
        "policy": {
            k: getattr(p, k)
            for k in ("type", "model", "expert", "expert_think", "do_sample", "temperature", "top_p", "top_k",
                      "max_tokens", "stop", "max_model_len", "chat_template")
        },
        "data": {"val_fraction": cfg.data.val_fraction},
    }


def precheck(cfg: CollectConfig) -> str:
    """Checks that need no environment: the env name and options, the model folder, the prompt template.

    Returns:
        The canonical env name (aliases resolved).

    Raises:
        ConfigError: naming the key and what it may be.
    """
    from agent_sft.envs import canonical_name, find_spec, registered
    from agent_sft.prompts import PromptError, resolve_template

    if find_spec(cfg.env.env_name) is None:
        raise ConfigError(f"env.env_name: unknown environment {cfg.env.env_name!r}; registered: {', '.join(registered())}")
    name = canonical_name(cfg.env.env_name)
    env_options(cfg)  # the env's options check themselves (paths, task types)
    model = cfg.policy.model
    if cfg.policy.type in ("vllm", "hf") and model and model.startswith(("/", "./", "../", "~")):
        if not os.path.isdir(os.path.expanduser(model)):
            raise ConfigError(f"policy.model: no model folder at {model} (give a local folder or a Hub model name)")
    try:
        resolve_template(name, cfg.prompt.style, cfg.prompt.template)
    except PromptError as err:
        raise ConfigError(str(err)) from None
    return name


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
    if run.get("errors"):
        lines.append(f"  errors            {run['errors']} episodes ended in an error ({run['workers_replaced']} env workers replaced)")
    lines += ["", "Load it with:", f'  datasets.load_dataset("{folder}", "sft")']
    return "\n".join(lines)


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
    cfg = load_config(args.config, args.overrides)
    env_name = precheck(cfg)
    repo_id = None
    if cfg.output.push_to_hub:
        from agent_sft import hub

        try:
            repo_id = hub.check_auth(cfg.output.push_to_hub)
        except hub.HubError as err:
            raise CLIError(f"output.push_to_hub: {err}") from None
    if (cfg.policy.type or ("vllm" if cfg.policy.model else "expert")) == "openai":
        _probe_server(cfg)
    from agent_sft.filters import FilterError
    from agent_sft.folder import DatasetError
    from agent_sft.policies import PolicyError

    writer = _open_writer(cfg, env_name)
    tally = _Tally()
    try:
        stats, run_info = _collect(cfg, env_name, writer, tally, show_progress=not args.no_progress and sys.stderr.isatty())
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: seal what finished, say so
        closed = _close_quietly(writer)
        kept = f"the {tally.added} episodes this run finished are sealed in {cfg.output.dir}" if closed else \
            f"what was sealed in {cfg.output.dir} is kept"
        raise type(err)(f"{kept}; run the same command again to play the rest") from None
    except BaseException as err:
        _close_quietly(writer)
        if _is_disk_full(err):
            raise CLIError(_disk_full(cfg.output.dir)) from None
        if isinstance(err, (DatasetError, FilterError, PolicyError)):
            raise CLIError(f"{err}\n{fatal_hint(err, cfg.output.dir)}") from None
        raise
    print(summary_text(stats, run_info, cfg.output.dir))
    if cfg.output.export_dir:
        from agent_sft.exports import export_verl

        out = cfg.output.export_dir
        counts = export_verl(cfg.output.dir, out)
        print(f"\nverl export (COLLECT_SFT): {out}/ " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if repo_id:
        from agent_sft import hub

        try:
            url = hub.push_folder(cfg.output.dir, repo_id, private=cfg.output.private)
        except hub.HubError as err:
            raise CLIError(f"push to {repo_id} failed: {err}; the folder is complete, retry with `agent-sft push {cfg.output.dir} {repo_id}`") from None
        print(f"\nPushed to {url}\n  datasets.load_dataset(\"{repo_id}\", \"sft\")")
    return 0


@dataclasses.dataclass
class _Tally:
    """What this run did so far, for the message of a run that stops early."""

    added: int = 0  # episodes finished and handed to the writer (not already sealed by another process)


def _probe_server(cfg: CollectConfig) -> None:
    """Refuse to start when no OpenAI-compatible server answers at `policy.base_url`."""
    try:
        from agent_sft.policies.openai import ServerUnreachableError, probe_server

        probe_server(cfg.policy)
    except ImportError as err:
        raise CLIError(str(err)) from None
    except ServerUnreachableError as err:
        raise CLIError(f"{err}. Nothing was played.") from None


def _close_quietly(writer: Any) -> bool:
    """Seal what the writer buffers; False when that failed too (the run is already failing)."""
    try:
        writer.close()
        return True
    except Exception:  # noqa: BLE001 - the error being reported is the first one
        return False


def _is_disk_full(err: BaseException | None) -> bool:
    """Whether `err`, or an error it was raised from, is "no space left on device"."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if type(err).__name__ == "DiskFullError":
            return True
        if isinstance(err, OSError) and (err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(err)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _disk_full(folder: str) -> str:
    """The one-line message of a run stopped by a full disk: the folder, the space left there, what to do."""
    where = folder if os.path.isdir(folder) else os.path.dirname(os.path.abspath(folder))
    try:
        free = f"{shutil.disk_usage(where).free / 2**20:.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return (f"no space left on the device of {folder} ({free} there); the episodes sealed so far are kept: "
            "free some space and run the same command again to resume")


def fatal_hint(err: BaseException, folder: str) -> str:
    """What to do after a run stopped on `err` (a DatasetError, FilterError or PolicyError)."""
    from agent_sft.filters import FilterError
    from agent_sft.folder import CorruptShardError
    from agent_sft.policies.openai import ServerRefusedError, ServerUnreachableError

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
    if isinstance(err, CorruptShardError):
        return f"A shard of {folder} is damaged: run `agent-sft repair {folder}`, then the same command again to resume."
    if isinstance(err, FilterError):
        return ("Fix the filter (filters.*), then run the same command again: the episodes are kept in raw and sft "
                "is derived again with the fixed filter.")
    return "What was sealed is kept; run the same command again to resume."


def _open_writer(cfg: CollectConfig, env_name: str):
    from agent_sft.config import FilterConfig
    from agent_sft.filters import FilterError
    from agent_sft.rollout import package_versions
    from agent_sft.writer import BuildSpec, DatasetError, DatasetWriter

    filters = dataclasses.asdict(cfg.filters)
    # Filters and style left at their defaults keep what the folder has (e.g. a later `agent-sft build`).
    default = filters == dataclasses.asdict(FilterConfig()) and cfg.output.sft_style == "auto"
    try:
        return DatasetWriter(
            cfg.output.dir,
            fingerprint=fingerprint(cfg, env_name),
            meta=to_dict(cfg),
            build=None if default else BuildSpec(style=cfg.output.sft_style, filters=filters),
            allow_config_change=cfg.output.allow_config_change,
            flush_every_s=cfg.output.flush_every_s,
            flush_every_episodes=cfg.output.flush_every_episodes,
            versions=package_versions(env_name, cfg.policy.type or "expert"),
        )
    except (DatasetError, FilterError, OSError, ImportError) as err:
        if _is_disk_full(err):
            raise CLIError(_disk_full(cfg.output.dir)) from None
        if isinstance(err, (DatasetError, FilterError)):
            raise CLIError(str(err)) from None
        # e.g. a filters.tokenizer that does not load
        raise CLIError(f"cannot open {cfg.output.dir}: {type(err).__name__}: {err}") from None


def _collect(cfg: CollectConfig, env_name: str, writer: Any, tally: _Tally, show_progress: bool) -> tuple[dict, dict]:
    from agent_sft.envs import spec
    from agent_sft.policies.registry import make_policy
    from agent_sft.rollout import Collector, RolloutError, WorkerStartError

    # The expert's plan is made in the env (policy.expert); the policy records which expert it replays,
    # under the model label the env's spec gives it.
    extra = {"expert_type": cfg.policy.expert, "env_name": env_name,
             "model": spec(env_name).expert_model(cfg.policy.expert)} if cfg.policy.type == "expert" else {}
    try:
        policy = make_policy(cfg.policy, **extra)
    except ImportError as err:
        raise CLIError(str(err)) from None
    except ConfigError:
        raise
    except (OSError, ValueError, RuntimeError) as err:
        raise CLIError(f"cannot load the {cfg.policy.type} policy (policy.model={cfg.policy.model}): {type(err).__name__}: {err}") from None
    try:
        with Collector(cfg, policy) as c:
            try:
                plan = c.plan(writer.done_ids)
            except (WorkerStartError, RolloutError) as err:
                raise CLIError(str(err)) from None
            _announce(cfg, plan)
            progress = _Progress(len(plan.episodes), show_progress)
            try:
                for ep in c.run(plan):
                    tally.added += bool(writer.add(ep))
                    progress.update(ep.success)
            except (WorkerStartError, RolloutError) as err:
                raise CLIError(str(err)) from None
            finally:
                progress.close()
            st = c.stats
    finally:
        policy.close()
    writer.close()  # seals the rest: from here on the writer knows every episode another process sealed first
    wall = max(st.wall_s, 1e-9)
    run_info = {
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
        "shard": cfg.output.shard,
    }
    return writer.finalize(summary=run_info), run_info


def _announce(cfg: CollectConfig, plan: Any) -> None:
    from agent_sft.envs import spec

    env = spec(cfg.env.env_name)
    eps = plan.episodes
    splits = sorted({t.task.game_split for t in eps})
    notes = [env.run_notes[s] for s in splits if s in env.run_notes]
    where = "; ".join(notes) if notes else \
        f"{plan.selected_tasks} tasks of {cfg.env.env_name}" + (f" ({', '.join(splits)})" if any(splits) else "")
    print(f"Playing {len(eps)} episodes on {where}, {min(cfg.data.val_batch_size, max(1, len(eps)))} envs in parallel, "
          f"policy {cfg.policy.type}{' ' + cfg.policy.model if cfg.policy.model else ''}.")
    if plan.skipped_done:
        print(f"Resuming {cfg.output.dir}: {plan.skipped_done} episodes already there are skipped.")
    evals = [s for s in splits if s in env.eval_splits]
    if evals:
        print(f"Note: {', '.join(evals)} holds {env.title or env.name}'s evaluation games; the dataset card says so.")
