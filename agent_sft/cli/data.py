"""`agent-sft build | export | merge | info | compact | repair | tiny-model`: work on dataset folders."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from typing import Any

from agent_sft.cli import CLIError
from agent_sft.config import FilterConfig, OutputConfig
from agent_sft.config.dotted import field_type
from agent_sft.config.schema import DpoConfig

BUILD_USAGE = """Re-derive the sft config (or a named build) from raw with new filters or style, and the folder's
scores, dpo and other named builds with it.

    agent-sft build agent_sft_data filters.require_success=true filters.max_steps=30 output.sft_style=episode
    agent-sft build agent_sft_data --require-success --max-steps 30 --style episode     # the same
    agent-sft build agent_sft_data --name sft_steps --style step     # another config beside sft
    agent-sft build agent_sft_data --name sft_steps --drop           # remove it
    agent-sft build agent_sft_data --dpo-pairs both --dpo-per-task 2

It takes the keys `collect` takes for the sft config (filters.*, output.sft_style), each also as a flag.
Keys left out take their defaults, not the folder's current ones.
"""


def build_keys() -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every setting `agent-sft build` takes: the filters and the sft row style."""
    out = []
    for section, cls, names in (("filters", FilterConfig, None), ("output", OutputConfig, ("sft_style",)),
                                ("dpo", DpoConfig, None)):
        hints = typing.get_type_hints(cls)
        out += [(f"{section}.{f.name}", f, hints[f.name]) for f in dataclasses.fields(cls) if not names or f.name in names]
    return out


def flag_of(f: dataclasses.Field) -> str:
    """A field's shorthand flag: `metadata["flag"]`, or its name (`max_steps` -> `--max-steps`)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.description = BUILD_USAGE
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("overrides", nargs="*", metavar="key=value", help="e.g. filters.require_success=true")
    p.add_argument("--dry-run", action="store_true",
                   help="print what each filter and stage would keep and drop, per env, and write nothing")
    p.add_argument("--name", help="write these settings as a config of this name beside sft (a named build), "
                                  "not as sft; raw, sft, dpo, scores and judge are reserved")
    p.add_argument("--drop", action="store_true", help="with --name: remove that named build from the folder")
    p.add_argument("--reasoning", metavar="NAME", help="with --name: put the rationales `agent-sft augment --name "
                                                      "NAME` wrote in the assistant turns (actions unchanged)")
    g = p.add_argument_group("shorthands for the keys (what reaches sft; raw keeps every episode)")
    for key, f, hint in build_keys():
        base, _ = field_type(hint)
        text = f.metadata.get("help", "").replace("%", "%%")
        kw: dict[str, Any] = {"dest": key, "default": argparse.SUPPRESS}
        flag = flag_of(f) if not key.startswith("dpo.") else "--dpo-" + f.name.replace("_", "-")
        choices = f.metadata.get("choices")
        if base is list:  # given once per item: --scores 'invalid_rate<=0.2' --scores 'judge.j>=0.5'
            kw.update(action="append", metavar="ITEM", help=f"{text} ({key}; repeat the flag for more)")
        elif base is bool:
            # the flag turns the default around: --require-success sets it true, --keep-errors drop_errors false
            on = not f.default
            kw.update(action="store_const", const=on,
                      help=f"{text} ({key}=true)" if on else f"The opposite of: {text} ({key}=false)")
        else:
            metavar = None if choices else {int: "N", float: "X"}.get(base, f.name.upper())
            kw.update(type=base, metavar=metavar, choices=choices, help=f"{text} ({key})")
        g.add_argument(flag, **kw)


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    if name == "build":
        p.add_argument("dir", help="dataset folder")
        _build_args(p)
    elif name == "export":
        p.add_argument("dir", help="dataset folder")
        p.add_argument("--format", default="verl", choices=["verl", "jsonl", "atif", "sharegpt", "tokens", "sts"],
                       help="verl: raw_trajectories.json + train/val .parquet and .csv; jsonl: one chat per line; "
                            "atif: one ATIF trajectory per episode (<split>/<episode_id>.json); sharegpt: "
                            "LLaMA-Factory's layout, one conversation per sft row, with dataset_info.json; tokens: "
                            "token ids, loss mask and logprobs per sequence for RL (policy.record_tokens); sts: Hub trace-viewer "
                            "sessions, one JSONL file per episode (<env>/<outcome>/<episode_id>.jsonl)")
        from agent_sft.publish.atif import DEFAULT_VERSION, VERSIONS

        p.add_argument("--atif-version", default=DEFAULT_VERSION, choices=VERSIONS, help="the ATIF version written")
        p.add_argument("--traces", default="auto", metavar="auto|all|none|N",
                       help="sts: the episodes written, a few per env and outcome (auto), all, none, or N spread over "
                            "envs and outcomes; chosen by the run seed")
        p.add_argument("--out", required=True, help="output folder")
    elif name == "merge":
        p.add_argument("dest", help="destination dataset folder (created, or added to)")
        p.add_argument("sources", nargs="+", help="dataset folders to merge")
        p.add_argument("--allow-config-change", action="store_true", help="merge folders collected with different configs")
    elif name == "info":
        p.add_argument("dir", help="dataset folder")
        p.add_argument("--json", action="store_true", help="print the statistics as JSON")
        p.add_argument("--quick", action="store_true", help="do not verify the shards' checksums")
    elif name == "compact":
        p.add_argument("dir", help="dataset folder")
    elif name == "repair":
        p.add_argument("dir", help="dataset folder")
        p.add_argument("--check", action="store_true", help="only verify every shard and report; change nothing")
    elif name == "tiny-model":
        p.add_argument("out", help="output folder for the model and tokenizer")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--generation-markers", action="store_true",
                       help="chat template with {%% generation %%} markers (for TRL assistant_only_loss)")


def build_spec(a: argparse.Namespace) -> Any:
    """The `BuildSpec` the flags and `key=value` overrides of `agent-sft build` ask for (the latter win).

    Raises:
        ConfigError: a key `build` does not take, or a bad value.
    """
    from agent_sft.config import CollectConfig, ConfigError, set_key
    from agent_sft.config.load import check_dpo, check_stages
    from agent_sft.dataset.layout import BuildSpec

    cfg = CollectConfig()
    taken = [k for k, _, _ in build_keys()]
    for key in taken:
        if key in vars(a):
            set_key(cfg, key, vars(a)[key])
    for item in a.overrides:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        if key not in taken and not key.startswith(("filters.", "dpo.")):
            raise ConfigError(f"{key!r} is not a key agent-sft build takes; it takes {', '.join(taken)}")
        set_key(cfg, key, value)  # an unknown filters.* key is refused here, naming it
        if key.startswith("dpo."):
            setattr(a, key, getattr(cfg.dpo, key[4:]))
    if cfg.filters.max_tokens is not None and not cfg.filters.tokenizer:
        raise ConfigError("filters.max_tokens (--max-tokens) needs filters.tokenizer (--tokenizer)")
    check_stages(cfg.filters)
    check_dpo(cfg.dpo)
    reasoning = getattr(a, "reasoning", None)
    if reasoning and not a.name:
        raise ConfigError("--reasoning needs --name: rationales go into a named build; sft keeps the recorded answers")
    return BuildSpec(cfg.output.sft_style, dataclasses.asdict(cfg.filters), reasoning or None)


def dpo_settings(a: argparse.Namespace) -> dict:
    """The `dpo.*` settings `agent-sft build` was given (call after `build_spec`); the rest stay the folder's."""
    return {k[4:]: v for k, v in vars(a).items() if k.startswith("dpo.")}


def run(a: argparse.Namespace) -> int:
    from agent_sft.dataset.filters import FilterError
    from agent_sft.errors import DatasetError

    try:
        return _run(a)
    except (DatasetError, FilterError) as e:
        raise CLIError(str(e)) from None


def _run(a: argparse.Namespace) -> int:
    if a.command == "build" and a.dry_run:
        from agent_sft.dataset.maintain import preview

        p = preview(a.dir, build_spec(a))
        print(f"agent-sft build would derive sft from {p['episodes']} episodes of {a.dir}: "
              f"{p['sft_rows']['train']} train rows, {p['sft_rows']['validation']} validation rows (nothing written)")
        for reason, n in sorted(p["drops"].items(), key=lambda rn: -rn[1]):
            envs = ", ".join(f"{env} {d[reason]}" for env, d in p["by_env"].items() if d.get(reason))
            print(f"  dropped by {reason}: {n} ({envs})")
        if not p["drops"]:
            print("  dropped: none")
    elif a.command == "build" and a.drop:
        from agent_sft.dataset.maintain import drop_build

        if not a.name:
            raise CLIError("--drop needs --name: the named build to remove")
        drop_build(a.dir, a.name)
        print(f"dropped the build {a.name!r} from {a.dir}")
    elif a.command == "build":
        from agent_sft.dataset.maintain import rebuild
        from agent_sft.dataset.reading import views_lines

        st = rebuild(a.dir, build_spec(a), a.name, dpo_settings(a))
        if a.name:
            v = st["views"][a.name]
            print(f"built {a.name}: {v['rows']['train']} train rows, {v['rows']['validation']} validation rows "
                  f"from {st['total_episodes']} episodes; dropped: {json.dumps(v['drops']) if v['drops'] else 'none'}")
        else:
            print(f"rebuilt sft: {st['sft_rows']['train']} train rows, {st['sft_rows']['validation']} validation rows "
                  f"from {st['total_episodes']} episodes; dropped: {json.dumps(st['drops']) if st['drops'] else 'none'}")
        for line in views_lines(st):
            print(f"  {line}")
    elif a.command == "export":
        from agent_sft.config.load import parse_traces
        from agent_sft.publish.exports import FORMATS

        options = {"version": a.atif_version} if a.format == "atif" else {}
        if a.format == "sts":
            options = {"traces": parse_traces(a.traces, "--traces")}
        counts = FORMATS[a.format](a.dir, a.out, **options)
        print(f"exported {a.format} to {a.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    elif a.command == "merge":
        from agent_sft.dataset.layout import check_out_folder
        from agent_sft.dataset.maintain import merge

        check_out_folder(a.dest, "destination folder")
        r = merge(a.dest, a.sources, allow_config_change=a.allow_config_change)
        print(f"merged {len(a.sources)} folders into {a.dest}: {r['added']} episodes added, "
              f"{r['duplicates']} duplicates skipped; now {r['stats']['total_episodes']} episodes")
    elif a.command == "info":
        from agent_sft.dataset.reading import info_text, stats_json

        if a.json:
            print(stats_json(a.dir))
            return 0
        text, intact = info_text(a.dir, check=not a.quick)
        print(text)
        return 0 if intact else 1
    elif a.command == "repair":
        from agent_sft.dataset.maintain import repair_folder
        from agent_sft.dataset.reading import check_folder, repair_does

        if a.check:
            r = check_folder(a.dir)
            for rel, why in sorted(r["damaged"].items()):
                print(f"damaged: {rel}: {why}")
            shards = sum(rel.startswith("data/") for rel in r["damaged"])
            print(f"checked {r['checked']} shards: {shards} damaged"
                  + (f"; {r['missing_sft']} sft shard(s) to derive" if r["missing_sft"] else "")
                  + (f"; README.md lags {r['unlisted']} shard(s) behind" if r["unlisted"] else ""))
            if r["damaged"]:
                print(f"run `agent-sft repair {a.dir}`: {repair_does(r['damaged'])}")
            return 1 if r["damaged"] else 0
        actions = repair_folder(a.dir)
        print(f"repaired {a.dir}:")
        for line in actions:
            print(f"  {line}")
    elif a.command == "compact":
        from agent_sft.dataset.maintain import compact

        st = compact(a.dir)
        print(f"compacted {a.dir}: {st['shards']['raw']} raw and {st['shards']['sft']} sft shards")
    elif a.command == "tiny-model":
        from agent_sft.dataset.layout import check_out_folder
        from agent_sft.tiny_model import build_tiny_chat_model

        check_out_folder(a.out, "model folder")
        path = build_tiny_chat_model(a.out, seed=a.seed, generation_markers=a.generation_markers)
        print(f"tiny chat model written to {path}")
    return 0
