"""The dataset card: YAML front matter (configs, license, tags), a body that tells how the data was
made, and plots stored beside it. Rendered from `templates/dataset_card.md`; never shows local paths or secrets."""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import yaml

from agent_sft.dataset import atomic, derive, layout
from agent_sft.dataset.filters import active_filters
from agent_sft.dataset.per_task import count, percent
from agent_sft.dataset.public import public
from agent_sft.dataset.verified import read_verified, verified_line  # noqa: F401 - finalize reads it here
from agent_sft.policies.registry import policy_kind
from agent_sft.records import END_REASONS, END_UNJUDGED, SPLITS

log = logging.getLogger(__name__)
TEMPLATE = os.path.join(os.path.dirname(__file__), "templates", "dataset_card.md")
PLOTS_DIR = "meta/plots"


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def env_entries(env_cfg: dict) -> list[tuple[str, str, dict]]:
    """(label, env name, entry) for each env of a folder's config: the `env.mix` entries, or the one env."""
    mix = env_cfg.get("mix") or {}
    if mix:
        return [(label, str((e or {}).get("served_env") or (e or {}).get("env") or label), e or {})
                for label, e in mix.items()]
    name = env_cfg.get("env_name", "")
    options = env_cfg.get(name) if isinstance(env_cfg.get(name), dict) else {}
    name = str(options.get("served_env") or name)  # an env server: the env it plays
    return [(name, name, {})] if name else []


def front_matter(configs: list[dict], info: dict, stats: dict | None = None) -> str:
    cfg = info.get("config") or {}
    names = list(dict.fromkeys(name for _, name, _ in env_entries(cfg.get("env") or {})))
    env = ", ".join(names)
    tags = ["agent", "trajectories", "sft", "agent-sft", "multi-turn"]
    for name in names:
        tag = name.split("/")[0].lower()
        if tag not in tags:
            tags.append(tag)
    meta: dict[str, Any] = {
        "license": (cfg.get("output") or {}).get("license") or "mit",
        "language": ["en"],
        "task_categories": ["text-generation"],
        "tags": tags,
        "pretty_name": f"{env or 'agent'} trajectories",
    }
    if stats:
        meta["size_categories"] = [_size_category(stats.get("total_episodes", 0))]
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return "---\n" + head + _configs_yaml(configs) + "---\n\n"


def _configs_yaml(configs: list[dict]) -> str:
    """The `configs:` block, written directly: it is rewritten at every flush and lists every shard.

    Left out while the folder has no rows: an empty `configs:` would not parse as a list."""
    if not configs:
        return ""
    lines = ["configs:"]
    for c in configs:
        lines.append(f"- config_name: {json.dumps(c['config_name'])}")
        if c.get("default"):
            lines.append("  default: true")
        lines.append("  data_files:")
        for df in c["data_files"]:
            lines.append(f"  - split: {json.dumps(df['split'])}")
            lines.append("    path:")
            lines.extend(f"    - {json.dumps(p)}" for p in df["path"])
    return "\n".join(lines) + "\n"


EMPTY_TITLE = "# Agent trajectories (nothing collected yet)"


def progress_body(s: layout.Scan) -> str:
    if not s.raw_rows():
        return (
            f"{EMPTY_TITLE}\n\n"
            "No episode has been sealed in this folder yet, so it has no data files: `load_dataset` has nothing "
            "to load until the first episodes are sealed, and `agent_sft.load` returns empty `train` and "
            "`validation` splits. Run `agent-sft collect` with this folder as `output.dir` to fill it.\n"
        )
    return (
        "# Agent trajectories (collection in progress)\n\n"
        f"{s.raw_rows()} episodes sealed so far ({s.sft_rows()} sft rows). This card is completed when the run ends.\n"
    )


def current_body(folder: str) -> str | None:
    """The body (after the YAML front matter) of the folder's README, or None when there is none."""
    try:
        with open(os.path.join(folder, "README.md")) as fh:
            text = fh.read()
    except OSError:
        return None
    if text.startswith("---"):
        parts = text.split("\n---\n", 1)
        if len(parts) < 2:
            return None
        text = parts[1].lstrip("\n")
    return text or None


def write_plots(folder: str, stats: dict) -> list[str]:
    """Success by task type and an episode-length histogram as PNGs in meta/plots (outside the data)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.info("matplotlib is not installed: the card has no plots (pip install 'agent-sft[plots]')")
        return []
    if not stats.get("total_episodes"):
        return []
    out_dir = os.path.join(folder, PLOTS_DIR)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    types = stats["by_task_type"]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(types) + 1.4))
    names = list(types)
    rates = [100 * types[t]["success_rate"] for t in names]
    ax.barh(names, rates, color="#4c72b0")
    for i, t in enumerate(names):
        ax.text(min(rates[i] + 1, 92), i, f"{types[t]['successes']}/{types[t]['episodes']}", va="center", fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel("success rate (%)")
    ax.set_title("Success by task type")
    ax.invert_yaxis()
    fig.tight_layout()
    written.append(_save(fig, out_dir, "success_by_task_type.png"))
    plt.close(fig)
    h = stats["episode_length"]["histogram"]
    if h["counts"]:
        fig, ax = plt.subplots(figsize=(7, 3))
        edges = h["edges"]
        # bins hold whole step counts a..b-1: centre each bar on them
        ax.bar([(a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:])], h["counts"],
               width=[0.9 * (b - a) for a, b in zip(edges[:-1], edges[1:])], color="#55a868")
        ax.set_xlabel("episode length (steps)")
        ax.set_ylabel("episodes")
        ax.set_title("Episode lengths")
        fig.tight_layout()
        written.append(_save(fig, out_dir, "episode_length.png"))
        plt.close(fig)
    return written


def _save(fig: Any, out_dir: str, name: str) -> str:
    tmp = os.path.join(out_dir, f"{atomic.TMP_PREFIX}{os.getpid()}-{name}")
    fig.savefig(tmp, dpi=110, format="png")
    os.replace(tmp, os.path.join(out_dir, name))
    return f"{PLOTS_DIR}/{name}"


def _fmt_sample(sample: dict | None, max_steps: int = 6) -> str:
    if not sample:
        return "(no episodes)"
    lines = [f"Task type `{sample['task_type']}`, goal: *{sample['goal']}*; "
             f"{'won' if sample['success'] else 'not won'} in {sample['episode_length']} steps.", ""]
    for st in sample["steps"][:max_steps]:
        obs = st["observation"].strip().replace("\n", " ")
        lines.append(f"{st['index'] + 1}. observation: {obs[:300]}{'...' if len(obs) > 300 else ''}  ")
        lines.append(f"   response: `{st['response'][:300].replace('`', chr(39))}`  ")
        lines.append(f"   action: `{st['action']}`{'' if st['valid'] else ' (invalid: ' + st['invalid_reason'] + ')'}, reward {st['reward']}")
    if len(sample["steps"]) > max_steps:
        lines.append(f"... {len(sample['steps']) - max_steps} more steps")
    return "\n".join(lines)


def _env_spec(env_name: str) -> Any:
    """The spec of the env a folder was collected from (None when this process does not know it): it
    says which game splits are evaluation games and how the card words its games and its expert."""
    from agent_sft.config.schema import EnvConfig
    from agent_sft.envs import find_spec

    return find_spec(env_name or EnvConfig().env_name)  # a config that names no env played the default one


def render_body(info: dict, stats: dict, sample: dict | None, plots: list[str], repo: str = "<user>/<dataset>",
                verified: dict | None = None) -> str:
    """The card body from the template, filled with the run's config and figures (and `verified`, the folder's
    meta/verify.json, when it was verified)."""
    with open(TEMPLATE) as fh:
        template = fh.read()
    cfg = public(info.get("config") or {})
    env_cfg, pol, flt = cfg.get("env", {}), cfg.get("policy", {}), public((info.get("build") or {}).get("filters", {}))
    prompt_cfg = cfg.get("prompt", {})
    games = stats.get("game_splits", {})
    entries = env_entries(env_cfg) or [("", "", {})]
    specs = [_env_spec(name) for _, name, _ in entries]
    mixed = len(entries) > 1
    game_desc = ", ".join(f"{k}: {v} episodes" for k, v in sorted(games.items())) or "n/a"
    notes = list(dict.fromkeys(s.card.split_notes[g] for s in specs if s
                               for g in sorted(games) if g in s.card.split_notes))
    if notes:
        game_desc += f" ({'; '.join(notes)})"
    served = [s.card.served_text(entry if mixed else env_cfg.get(s.name) or {}) for (_, _, entry), s in zip(entries, specs) if s]
    game_desc += "".join(f"; {line}" for line in dict.fromkeys(served) if line)
    warnings = []
    for spec in {s.name: s for s in specs if s}.values():
        evals = [g for g in games if g in spec.eval_splits]
        if evals:
            warnings.append(f"> **Warning:** games came from {spec.card.title or spec.name}'s evaluation split(s) "
                            f"{', '.join(evals)}. Do not train on this data if you evaluate on those games.")
    warning = "\n>\n".join(warnings)
    kind = policy_kind(pol)
    policy = f"`{kind}`" + (f", model `{pol.get('model')}`" if pol.get("model") else "")
    if kind == "expert":
        from agent_sft.envs.specs import FALLBACK_EXPERT

        experts = []
        for (label, _name, entry), spec in zip(entries, specs):
            expert = entry.get("expert") or pol.get("expert") or (spec.default_expert() if spec else None) or FALLBACK_EXPERT
            source = f" from {spec.card.expert_source}" if spec and spec.card.expert_source else ""
            experts.append(f"{expert} expert{source}" + (f" for {label}" if mixed else ""))
        policy += f" ({'; '.join(experts)})"
        sampling = "deterministic expert"
    else:
        keys = ("do_sample", "temperature", "top_p", "top_k", "max_tokens", "stop")
        sampling = ", ".join(f"{k}={pol.get(k)}" for k in keys if k in pol)
    active = {k: v for k, v in flt.items() if v not in (None, False, "", [])}
    st = stats
    split_table = "\n".join(f"| {sp} | {st['episodes'].get(sp, 0)} | {st['sft_rows'].get(sp, 0)} |" for sp in SPLITS)
    task_table = _task_table(st)
    tok = st.get("tokens", {})
    tokens = (f"Tokens: {tok['prompt']} prompt, {tok['completion']} completion." if tok.get("completion") is not None else "")
    versions = ", ".join(f"{k} {v}" for k, v in sorted((info.get("versions") or {}).items())) or "n/a"
    style = (info.get("build") or {}).get("style", "auto")
    values = {
        "title": f"{', '.join(dict.fromkeys(n for _, n, _ in entries if n)) or 'Agent'} trajectories",
        "env": ", ".join(dict.fromkeys(n for _, n, _ in entries if n)),
        "total_episodes": st["total_episodes"],
        "success_rate": f"{100 * st['success_rate']:.1f}%",
        "eval_warning": warning,
        "games": game_desc,
        "policy": policy,
        "sampling": sampling,
        "seed": env_cfg.get("seed", ""),
        "samples_per_task": (env_cfg.get("rollout") or {}).get("n", 1),
        "max_steps": ", ".join(f"{label} {entry.get('max_steps') or env_cfg.get('max_steps', '')}"
                               for label, _, entry in entries) if mixed else env_cfg.get("max_steps", ""),
        "prompt": f"style `{prompt_cfg.get('style', 'window')}`, history {env_cfg.get('history_length', '')}, "
                  f"template `{prompt_cfg.get('template') or 'built-in'}`",
        "sft_style": {"auto": "follow the prompt style", "step": "one row per step", "episode": "one row per episode"}.get(style, style),
        "rollout": _rollout(cfg, st.get("run") or {}),
        "filters": ", ".join(f"`{k}={v}`" for k, v in sorted(active.items())) or "none",
        "drops": (", ".join(f"{k}: {v}" for k, v in sorted(st["drops"].items())) or "none")
        + (f" (the build stages over the whole folder, per env: {derive.stage_drops_text(info)})"
           if derive.stage_drops_by_env(info) else ""),
        "versions": versions,
        "split_table": split_table,
        "task_table": task_table,
        "pass_at_k": _pass_table(st),
        "reward_distribution": _reward_lines(st),
        "views": _views_section(st, info),
        "mean_reward": f"{st['mean_final_reward']:.3f}",
        "mean_length": f"{st['mean_length']:.1f}",
        "min_length": st["episode_length"]["min"],
        "max_length": st["episode_length"]["max"],
        "invalid_steps": st["invalid_steps"],
        "steps": st["steps"],
        "end_reasons": ", ".join(f"{k} {v}" for k, v in sorted(st["end_reasons"].items())) or "none",
        "tokens": tokens,
        "plots": "\n\n".join(f"![{os.path.basename(p)[:-4].replace('_', ' ')}]({p})" for p in plots),
        "sample": _fmt_sample(sample),
        "repo": repo,
        "verified": verified_line(verified),
        "end_reason_values": ", ".join(r for r in END_REASONS if r != END_UNJUDGED or st["end_reasons"].get(r)),
    }
    body = re.sub(r"\{\{(\w+)\}\}", lambda m: str(values.get(m.group(1), m.group(0))), template)
    return re.sub(r"\n{3,}", "\n\n", body)


def _views_section(st: dict, info: dict) -> str:
    """The configs beside `sft` and `raw` (named builds, `dpo`, `scores`) and what the build stages dropped, per
    env and task type."""
    lines = []
    for name, v in (st.get("views") or {}).items():
        rows = v.get("rows") or {}
        counts = f"{rows.get('train', 0)} | {rows.get('validation', 0)}"
        if v["kind"] == "dpo":
            spec = v.get("spec") or {}
            what = (f"preference pairs (`{spec.get('pairs')}`, at most {spec.get('per_task')} per task)"
                    if not v.get("why_none") else v["why_none"])
        elif v["kind"] == "scores":
            what = "quality scores of every episode"
        else:
            b = v.get("build") or {}
            active = public(active_filters(b.get("filters") or {}))
            drops = ", ".join(f"{k} {n}" for k, n in sorted((v.get("drops") or {}).items())) or "none"
            what = (f"a named build: style `{b.get('style')}`, filters "
                    f"{', '.join(f'`{k}={x}`' for k, x in sorted(active.items())) or 'none'}; dropped: {drops}"
                    + (f"; reasoning from rationales `{b['reasoning']}` (`agent-sft augment`) in "
                       f"{v.get('reasoning_steps', 0)} steps" if b.get("reasoning") else ""))
        lines.append(f"| `{name}` | {counts} | {what} |")
    out = ""
    if lines:
        out = "Other configs:\n\n| config | train | validation | what |\n|---|---:|---:|---|\n" + "\n".join(lines)
    by_type = derive.stage_drops_by_task_type(info)
    if by_type:
        rows = [f"| {env} | {tt or '-'} | {', '.join(f'{k} {n}' for k, n in sorted(d.items()))} |"
                for env, types in by_type.items() for tt, d in types.items()]
        out += ("\n\n" if out else "") + ("What the build stages over the whole folder dropped from `sft`:\n\n"
                                          "| env | task type | dropped |\n|---|---|---|\n" + "\n".join(rows))
    return out


def _rollout(cfg: dict, run: dict) -> str:
    """How the episodes were played: the loop mode and parallelism, and the last run's throughput."""
    mode = run.get("mode") or (cfg.get("loop") or {}).get("mode") or "sync"
    parallel = run.get("parallel_envs") or (cfg.get("data") or {}).get("val_batch_size")
    text = f"`{mode}` loop" + (f", {parallel} episodes at once" if parallel else "")
    if run.get("episodes"):
        text += f"; last run {run['episodes']} episodes at {run.get('episodes_per_s', 0.0):.2f}/s"
        if run.get("prefix_cache_hit_rate") is not None:
            text += f", prefix cache hit rate {100 * run['prefix_cache_hit_rate']:.1f}%"
    if run.get("collectors"):
        cs = run["collectors"]
        text += (f"; on Ray: {len(cs)} collectors on {len({c['node'] for c in cs})} nodes, "
                 f"{run.get('actors_restarted', 0)} restarted")
    return text


def _task_table(st: dict) -> str:
    """Success by task type; with several envs, by env and then by task type within each."""
    def cells(b: dict) -> str:
        return f"{b['episodes']} | {b['successes']} | {100 * b['success_rate']:.1f}% | {b['mean_length']:.1f} |"

    by_env = st.get("by_env") or {}
    if len(by_env) > 1:
        lines = ["Success by env and task type:", "", "| env | task type | episodes | won | success rate | mean length |",
                 "|---|---|---:|---:|---:|---:|"]
        for env, e in by_env.items():
            lines.append(f"| **{env}** | all | {cells(e)}")
            lines += [f"| {env} | {t} | {cells(b)}" for t, b in e["by_task_type"].items()]
        return "\n".join(lines)
    rows = [f"| {t} | {cells(b)}" for t, b in st["by_task_type"].items()] or ["| (none) | 0 | 0 | - | - |"]
    return "\n".join(["Success by task type:", "", "| task type | episodes | won | success rate | mean length |",
                      "|---|---:|---:|---:|---:|", *rows])


def _pass_table(st: dict) -> str:
    """Attempts and pass@k by task type (by env and task type with several envs) when some task was
    attempted more than once; otherwise the one line saying pass@1 is the success rate."""
    pk = st.get("pass_at_k") or {}
    if not pk.get("tasks"):
        return ""
    if pk["tasks"] == pk["attempts"]:
        return "pass@1 equals the success rate: one sample per task."
    k = pk["k"]
    at_k = f"pass@{k}"

    def cells(b: dict) -> str:
        row = f"{b['tasks']} | {b['attempts']} | {b['successes']} | {percent(b['pass@1'])} |"
        if k > 1:
            covered = b[f"tasks_{at_k}"]
            fewer = "" if covered == b["tasks"] else f" ({count(covered, 'task')})"
            row += f" {percent(b[at_k])}{fewer} |"
        return row

    cols = "| tasks | attempts | won | pass@1 |" + (f" {at_k} |" if k > 1 else "")
    rule = "|---:|---:|---:|---:|" + ("---:|" if k > 1 else "")
    by_env = pk.get("by_env") or {}
    if len(by_env) > 1:
        lines = ["| env | task type " + cols, "|---|---" + rule]
        for env, e in by_env.items():
            lines.append(f"| **{env}** | all | {cells(e)}")
            lines += [f"| {env} | {t} | {cells(b)}" for t, b in e["by_task_type"].items()]
    else:
        lines = ["| task type " + cols, "|---" + rule, f"| **all** | {cells(pk)}"]
        lines += [f"| {t} | {cells(b)}" for t, b in pk["by_task_type"].items()]
    note = ("pass@1 is the mean over a row's tasks of each task's success rate"
            + (f"; {at_k}, the chance that {k} of a task's attempts hold a success (the unbiased estimator of "
               f"Chen et al. 2021), is the mean over the tasks with at least {k} attempts: "
               f"{pk[f'tasks_{at_k}']} of {pk['tasks']} (a row with fewer says how many)" if k > 1 else "")
            + ". Figures per task are in `meta/stats.json` under `by_task`.")
    return "\n".join(["Attempts and pass@k:", "", *lines, "", note])


def _reward_lines(st: dict) -> str:
    """Each env's final rewards: value x episodes, or the non-empty bins of their histogram when many."""
    lines = []
    for env, e in (st.get("by_env") or {}).items():
        d = e.get("final_rewards") or {}
        parts = [f"{v} × {n}" for v, n in (d.get("values") or {}).items()]
        if not parts:
            h = d.get("histogram") or {"edges": [], "counts": []}
            parts = [f"{a:g} to {b:g}: {n}" for a, b, n in zip(h["edges"], h["edges"][1:], h["counts"]) if n]
        if parts:
            lines.append(f"- {env}: {', '.join(parts)}")
    return "Final rewards (value × episodes):\n\n" + "\n".join(lines) if lines else ""


__all__ = ["front_matter", "render_body", "write_plots", "progress_body", "public", "json"]


def traces_section(sessions: int, chosen: str, link: str) -> str:
    """The pushed card's section on the episodes uploaded for the Hub's trace viewer (`traces/` at `link`)."""
    return (f"\n## Traces\n\n[`traces/`]({link}) holds {sessions} episodes ({chosen}) in the Hub's Session Trace "
            "Simple Format, harness `agent-sft`: one JSONL file per episode, `traces/<env>/<outcome>/<episode_id>.jsonl`, "
            "whose first line holds the episode's facts (env, task, success, reward, end reason) and each further "
            "line one message (system, user, assistant with its reasoning and tool calls, tool). They are not a "
            "config of this dataset: `load_dataset` leaves them out. Open one from the repo's *Files and versions* "
            "tab; the Hub's trace viewer may show it as a session, and it reads as plain JSONL either way.\n")
