"""`agent-sft build | export | merge | info | compact | repair | tiny-model`: work on dataset folders."""

from __future__ import annotations

import argparse
import json

from agent_sft.cli import CLIError


def _filter_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("filters (what reaches sft; raw keeps every episode)")
    g.add_argument("--require-success", action="store_true", help="keep only won episodes")
    g.add_argument("--keep-errors", action="store_true", help="keep episodes that ended in an error")
    g.add_argument("--min-final-reward", type=float, help="keep episodes whose return is at least this")
    g.add_argument("--valid-only", action="store_true", help="keep episodes whose every action was valid")
    g.add_argument("--min-steps", type=int, help="keep episodes with at least this many steps")
    g.add_argument("--max-steps", type=int, help="keep episodes with at most this many steps")
    g.add_argument("--max-tokens", type=int, help="drop sft rows longer than this (needs --tokenizer)")
    g.add_argument("--tokenizer", help="tokenizer path or name for --max-tokens")
    g.add_argument("--callable", help="module:function or file.py:function taking a raw row, returning bool")
    p.add_argument("--style", default="auto", choices=["auto", "step", "episode"],
                   help="sft rows: auto follows the prompt style; step: one per step; episode: one per episode")


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    if name == "build":
        p.add_argument("dir", help="dataset folder")
        _filter_args(p)
    elif name == "export":
        p.add_argument("dir", help="dataset folder")
        p.add_argument("--format", default="verl", choices=["verl", "jsonl"],
                       help="verl: raw_trajectories.json + train/val .parquet and .csv; jsonl: one chat per line")
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


def _filters(a: argparse.Namespace) -> dict:
    if a.max_tokens is not None and not a.tokenizer:
        raise CLIError("--max-tokens needs --tokenizer")
    return {"require_success": a.require_success, "drop_errors": not a.keep_errors,
            "min_final_reward": a.min_final_reward, "valid_only": a.valid_only, "min_steps": a.min_steps,
            "max_steps": a.max_steps, "max_tokens": a.max_tokens, "tokenizer": a.tokenizer, "callable": a.callable}


def run(a: argparse.Namespace) -> int:
    from agent_sft.filters import FilterError
    from agent_sft.folder import DatasetError

    try:
        return _run(a)
    except (DatasetError, FilterError) as e:
        raise CLIError(str(e)) from None


def _run(a: argparse.Namespace) -> int:
    if a.command == "build":
        from agent_sft.maintain import rebuild
        from agent_sft.writer import BuildSpec

        st = rebuild(a.dir, BuildSpec(a.style, _filters(a)))
        print(f"rebuilt sft: {st['sft_rows']['train']} train rows, {st['sft_rows']['validation']} validation rows "
              f"from {st['total_episodes']} episodes; dropped: {json.dumps(st['drops']) if st['drops'] else 'none'}")
    elif a.command == "export":
        from agent_sft.exports import FORMATS

        counts = FORMATS[a.format](a.dir, a.out)
        print(f"exported {a.format} to {a.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    elif a.command == "merge":
        from agent_sft.maintain import merge

        r = merge(a.dest, a.sources, allow_config_change=a.allow_config_change)
        print(f"merged {len(a.sources)} folders into {a.dest}: {r['added']} episodes added, "
              f"{r['duplicates']} duplicates skipped; now {r['stats']['total_episodes']} episodes")
    elif a.command == "info":
        from agent_sft.dataset import info_text, stats_json

        if a.json:
            print(stats_json(a.dir))
            return 0
        text, intact = info_text(a.dir, check=not a.quick)
        print(text)
        return 0 if intact else 1
    elif a.command == "repair":
        from agent_sft.dataset import check_folder
        from agent_sft.maintain import repair_folder

        if a.check:
            r = check_folder(a.dir)
            for rel, why in sorted(r["damaged"].items()):
                print(f"damaged: {rel}: {why}")
            print(f"checked {r['checked']} shards: {len(r['damaged'])} damaged"
                  + (f"; {r['missing_sft']} sft shard(s) to derive" if r["missing_sft"] else ""))
            return 1 if r["damaged"] else 0
        actions = repair_folder(a.dir)
        print(f"repaired {a.dir}:")
        for line in actions:
            print(f"  {line}")
    elif a.command == "compact":
        from agent_sft.maintain import compact

        st = compact(a.dir)
        print(f"compacted {a.dir}: {st['shards']['raw']} raw and {st['shards']['sft']} sft shards")
    elif a.command == "tiny-model":
        from agent_sft.tiny_model import build_tiny_chat_model

        path = build_tiny_chat_model(a.out, seed=a.seed, generation_markers=a.generation_markers)
        print(f"tiny chat model written to {path}")
    return 0
