"""The envs of a run: `env.mix` (several envs into one dataset) or the single `env.env_name`, as lanes.

A lane is one env with everything a run needs to play it: its spec and checked options, its step budget,
expert, prompt template, task-type filter and how many episodes it gets. A plain run is one lane made of
`env.env_name`, `env.<env>.*`, `env.max_steps`, `policy.expert`, `prompt.template` and
`env.num_episodes`; a mix of one entry gives the very same lane, so it plays the same episodes.

    env:
      num_episodes: 200
      mix:
        - {env: alfworld, weight: 2}
        - {env: textworld, episodes: 40, max_steps: 30}
        - {env: babyai, weight: 1, levels: [BabyAI-GoToRedBall-v0]}

or, as dotted keys: `env.mix.alfworld.weight=2 env.mix.babyai.levels=[BabyAI-GoToRedBall-v0]`. An entry
names its env with `env` (default: its label); `name` labels a second entry of the same env. The
other fields are `MIX_FIELDS`; any other key is one of the env's options (or put them under `options`).
Options set as `env.<env>.<option>` apply to every entry of that env.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import typing
from dataclasses import dataclass
from typing import Any

from agent_sft.config.dotted import MIX_FIELDS, coerce, did_you_mean, env_spec
from agent_sft.config.schema import CollectConfig
from agent_sft.errors import ConfigError
from agent_sft.policies.registry import package_versions as policy_versions
from agent_sft.policies.registry import policy_kind
from agent_sft.version import run_versions

DEFAULT_MAX_SAMPLES = 8
"""A task's budget of samples when `until_success` is set and `max_samples_per_task` is not."""


@dataclass(frozen=True)
class Lane:
    """One env of a run, resolved and checked."""

    label: str
    name: str  # canonical env name (episode ids use it)
    spec: Any  # EnvSpec
    options: Any  # the env's options dataclass instance, or None
    max_steps: int
    expert: str | None  # the env's expert to plan with when the policy is the expert
    template: str | None  # a template file, None for the built-in one
    task_types: tuple[str, ...]
    episodes: int | None  # None: one pass over the tasks (x env.rollout.n, or x max_samples with until_success)
    weight: float | None = None
    until_success: int | None = None  # sample a task until this many succeed (None: env.rollout.n samples each)
    max_samples: int | None = None  # with until_success: a task's budget of samples

    @property
    def played(self) -> Any:
        """What this lane's episodes record as played (`EnvSpec.played`, a `PlayedEnv`): its name, experts,
        per-episode info keys and the package versions its servers reported; the env itself for a local
        env, the env its servers play for an env server."""
        return self.spec.played(self.options, self.name)

    def package_versions(self, kind: str) -> dict[str, str]:
        """The package versions this lane's episodes record: python and agent_sft, the env's packages (its
        spec's: for an env server, those of the env it plays, then what the server reported), and the `kind`
        policy backend's (its row in the policy table)."""
        from agent_sft.envs import find_spec

        played = find_spec(self.name)  # the env the episodes record (an env server's: the one it serves)
        env = played.package_versions() if played is not None else {}
        return {**run_versions(), **env, **policy_versions(kind), **self.played.packages}

    def expert_model(self) -> str:
        """The model recorded for the expert policy on this lane."""
        return self.played.expert_model(self.expert or "expert")

    def env_kwargs(self, cfg: CollectConfig) -> dict[str, Any]:
        """The env factory's keyword arguments (`EnvSpec.kwargs`); the expert only for an expert policy."""
        expert = self.expert if policy_kind(cfg) == "expert" else None
        return self.spec.kwargs(self.options, seed=cfg.env.seed, max_steps=self.max_steps,
                                task_types=list(self.task_types), expert=expert)

    def fingerprint(self) -> dict[str, Any]:
        """What decides this lane's episodes (see `agent_sft.dataset.fingerprint`)."""
        return {
            "env_name": self.name,
            "max_steps": self.max_steps,
            "expert": self.expert,
            "template_sha256": template_sha256(self.template),
            **self.spec.fingerprint(self.options),
        }


def template_sha256(path: str | None) -> str | None:
    if not path:
        return None
    try:
        with open(path, "rb") as fh:
            return hashlib.sha256(fh.read()).hexdigest()[:16]
    except OSError as e:
        raise ConfigError(f"cannot read prompt template {path}: {e.strerror}") from None


def lanes(cfg: CollectConfig) -> list[Lane]:
    """The run's envs, checked: `env.mix` entries, or the one env of a plain run.

    Raises:
        ConfigError: an unknown env, option, field or expert; a bad count or weight (naming the entry).
    """
    e = cfg.env
    if not e.mix:
        spec = env_spec(e.env_name)
        options = spec.build_options(e.options.get(spec.name, {}))
        played = spec.played(options, _canonical(e.env_name))
        k, budget = _stopping(cfg, e.until_success, e.max_samples_per_task, "env", "env")
        return [Lane(spec.name, played.name, spec, options, e.max_steps,
                     _expert(cfg, spec, None, "policy.expert", played), cfg.prompt.template, tuple(e.task_types),
                     e.num_episodes, until_success=k, max_samples=budget)]
    if e.task_types:
        raise ConfigError("env.task_types: with env.mix, give task_types per entry (env.mix.<label>.task_types)")
    out = [_lane(cfg, label, dict(raw)) for label, raw in e.mix.items()]
    if e.max_samples_per_task is not None and not any(lane.until_success for lane in out):
        raise ConfigError("env.max_samples_per_task: a budget for sampling until success, which no env.mix entry "
                          "turns on (env.mix.<label>.until_success or env.until_success)")
    rule: dict[str, Lane] = {}
    for lane in out:  # a folder's episodes name their env, not their entry: its stopping rule must be one
        other = rule.setdefault(lane.name, lane)
        if (other.until_success, other.max_samples) != (lane.until_success, lane.max_samples):
            raise ConfigError(f"env.mix: entries {other.label!r} and {lane.label!r} both play {lane.name} but sample "
                              "until success differently (until_success, max_samples_per_task); give them the same, "
                              "or collect them into separate folders")
    unused = sorted(set(e.options) - {lane.spec.name for lane in out})
    if unused:
        keys = ", ".join(f"env.{name}.{k}" for name in unused for k in e.options[name])
        raise ConfigError(f"{keys}: {', '.join(unused)} is not in env.mix; set options per entry "
                          "(env.mix.<label>.<option>)")
    return _share(out, e.num_episodes)


def _canonical(name: str) -> str:
    from agent_sft.envs import canonical_name

    return canonical_name(name)


def _expert(cfg: CollectConfig, spec: Any, asked: str | None, key: str, played: Any) -> str | None:
    """The expert of an env: the one asked for, else policy.expert, else the played env's first (for an
    env server, those of the env it serves)."""
    from agent_sft.envs.specs import FALLBACK_EXPERT

    if not spec.expert_kwarg:
        return None
    experts, default, name_ = tuple(played.experts), played.default_expert, played.name
    # An env that lists no experts judges the name itself; it gets the historical default.
    name = asked or cfg.policy.expert or default or FALLBACK_EXPERT
    if policy_kind(cfg) == "expert" and experts and name not in experts:
        where = key if asked or key != "policy.expert" else "policy.expert"
        raise ConfigError(f"{where}: {name!r} is not an expert of {name_} (its experts: {', '.join(experts)})")
    return name


def _lane(cfg: CollectConfig, label: str, raw: dict) -> Lane:
    key = f"env.mix.{label}"
    env_name = str(raw.pop("env", None) or label)
    spec = env_spec(env_name, f"{key}.env")
    options_raw = raw.pop("options", None) or {}
    if not isinstance(options_raw, dict):
        raise ConfigError(f"{key}.options: expected a mapping of {spec.name}'s options")
    fields = {f.name: f for f in spec.option_fields()}
    hints = typing.get_type_hints(spec.options) if spec.options is not None else {}
    known = set(MIX_FIELDS) - {"env", "name", "options"}
    values: dict[str, Any] = dict(cfg.env.options.get(spec.name, {}))  # env.<env>.* as the entry's defaults
    for k, v in [*options_raw.items(), *((k, v) for k, v in raw.items() if k not in known)]:
        if k not in fields:
            allowed = sorted(known | set(fields))
            near = did_you_mean(f"{key}.{k}", [f"{key}.{n}" for n in allowed])
            raise ConfigError(f"unknown config key '{key}.{k}': neither an entry field nor an option of "
                              f"{spec.name}{near} (allowed: {', '.join(allowed)})")
        values[k] = coerce(f"{key}.{k}", v, fields[k], hints[k])
    try:
        options = spec.build_options(values)
    except ConfigError as err:
        raise ConfigError(str(err).replace(f"env.{spec.name}", key, 1)) from None

    def num(field: str, kind: type, lo: float) -> Any:
        v = raw.get(field)
        if v is None:
            return None
        try:
            if isinstance(v, bool) or (kind is int and isinstance(v, float) and not v.is_integer()):
                raise ValueError
            v = kind(v)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}.{field}: expected a number, got {raw.get(field)!r}") from None
        if not v >= lo or (kind is float and not math.isfinite(v)):
            raise ConfigError(f"{key}.{field}: must be {'> 0' if field == 'weight' else f'at least {lo}'} (got {v})")
        return v

    episodes = num("episodes", int, 1)
    weight = num("weight", float, 1e-300)
    if "weight" in raw and weight is not None and weight <= 0:
        raise ConfigError(f"{key}.weight: must be > 0 (got {weight})")
    if episodes is not None and weight is not None:
        raise ConfigError(f"{key}: give episodes or weight, not both")
    max_steps = num("max_steps", int, 1) or cfg.env.max_steps
    task_types = raw.get("task_types") or []
    task_types = [task_types] if isinstance(task_types, str) else [str(t) for t in task_types]
    if spec.filters_tasks and "task_types" in fields:  # the env filters its tasks; its option checks the names
        options = spec.build_options({**values, "task_types": task_types}) if task_types else options
    template = raw.get("template") or cfg.prompt.template
    played = spec.played(options, _canonical(env_name))
    k = num("until_success", int, 1)
    budget = num("max_samples_per_task", int, 1)
    # An entry's own value, else the run's (env.until_success, env.max_samples_per_task).
    k, budget = _stopping(cfg, cfg.env.until_success if k is None else k,
                          cfg.env.max_samples_per_task if budget is None else budget,
                          "env" if k is None else key, "env" if budget is None else key)
    return Lane(label, played.name, spec, options, max_steps,
                _expert(cfg, spec, raw.get("expert"), f"{key}.expert", played), template, tuple(task_types),
                episodes, weight, until_success=k, max_samples=budget)


def _stopping(cfg: CollectConfig, k: int | None, budget: int | None, k_at: str,
              budget_at: str) -> tuple[int | None, int | None]:
    """(until_success, the budget) of a lane, checked; (None, None) for a fixed number of samples per task.
    `k_at` and `budget_at` say where each value was set (`env` or `env.mix.<label>`), for the messages; a
    run's budget that a mix entry inherits without sampling until success is left unused."""
    k_key, b_key = f"{k_at}.until_success", f"{budget_at}.max_samples_per_task"
    if k is None:
        if budget is not None and (budget_at != "env" or not cfg.env.mix):  # a mix's own budget: see `lanes`
            switch = k_key if budget_at == "env" else f"{budget_at}.until_success (or env.until_success)"
            raise ConfigError(f"{b_key}: a budget for sampling until success, which {switch} turns on; for a "
                              "fixed number of samples per task set env.samples_per_task")
        return None, None
    for key, v in ((k_key, k), (b_key, budget)):
        if v is not None and v < 1:
            raise ConfigError(f"{key}: must be at least 1 (got {v})")
    if cfg.env.rollout.n > 1:
        raise ConfigError(f"{k_key} plays a task's samples one after another: leave env.samples_per_task at 1 "
                          f"(got {cfg.env.rollout.n}) and set {b_key}, a task's most samples")
    shown = b_key if budget is not None else f"{b_key} (default {DEFAULT_MAX_SAMPLES})"
    budget = DEFAULT_MAX_SAMPLES if budget is None else budget
    if k > budget:
        raise ConfigError(f"{k_key}={k} is above {shown}={budget}: a task cannot reach {k} successes in {budget} "
                          f"samples; raise {b_key} or lower {k_key}")
    return k, budget


def _share(out: list[Lane], total: int | None) -> list[Lane]:
    """Give weighted entries (and, when env.num_episodes is set, entries with no count) their share."""
    fixed = sum(lane.episodes or 0 for lane in out)
    shared = [i for i, lane in enumerate(out) if lane.episodes is None and (lane.weight is not None or total)]
    if not shared:
        if total is not None and fixed != total and all(lane.episodes is not None for lane in out):
            raise ConfigError(f"env.num_episodes={total} but the env.mix entries add up to {fixed} episodes")
        return out
    if total is None:
        label = out[shared[0]].label
        raise ConfigError(f"env.mix.{label}.weight: weights share env.num_episodes, which is not set")
    left = total - fixed
    if left < len(shared):
        raise ConfigError(f"env.num_episodes={total} leaves {max(left, 0)} episodes for {len(shared)} weighted "
                          f"env.mix entries (the others take {fixed}); raise it")
    weights = [out[i].weight if out[i].weight is not None else 1.0 for i in shared]
    exact = [left * w / sum(weights) for w in weights]
    counts = [max(1, math.floor(x)) for x in exact]
    # Largest remainders take what rounding left, in entry order on ties.
    order = sorted(range(len(shared)), key=lambda j: (-(exact[j] - math.floor(exact[j])), j))
    for j in order[: max(0, left - sum(counts))]:
        counts[j] += 1
    while sum(counts) > left:  # entries raised to 1 took from the largest
        j = max(range(len(counts)), key=lambda j: (counts[j], -j))
        counts[j] -= 1
    out = list(out)
    for i, c in zip(shared, counts):
        out[i] = dataclasses.replace(out[i], episodes=c)
    return out

