"""`agent-sft envs [NAME]`: the registered environments, their options, task types, experts and whether
their engine is installed. Nothing here imports an engine (some download data when imported)."""

from __future__ import annotations

import argparse
import json

from agent_sft.cli import CLIError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="one environment: its options in full")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def describe(spec) -> dict:
    """What a listing says of an env, from its spec only."""
    missing = spec.missing_packages()
    options = []
    if spec.options is not None:
        defaults = spec.options()
        for f in spec.option_fields():
            options.append({"key": f"env.{spec.name}.{f.name}", "default": getattr(defaults, f.name),
                            "help": f.metadata.get("help", ""), "choices": list(f.metadata.get("choices") or []),
                            "fingerprint": f.metadata.get("fingerprint", True)})
    return {
        "name": spec.name,
        "title": spec.card.title or spec.name,
        "description": spec.card.description,
        "aliases": list(spec.aliases),
        "installed": not missing,
        "missing": missing,
        "install": spec.install_hint(),
        "experts": list(spec.experts) if spec.expert_kwarg else [],
        "has_expert": bool(spec.expert_kwarg),
        "task_types": list(spec.card.task_types),
        "options": options,
    }


def checks(spec) -> list[dict] | None:
    """What the env package's own `check()` finds on this machine (a checkout, data, services), when it has one."""
    import importlib

    if not isinstance(spec.entry_point, str):
        return None
    package = spec.entry_point.partition(":")[0].rpartition(".")[0]
    report = getattr(importlib.import_module(package), "check_report", None) if package else None
    return report() if callable(report) else None


def run(args: argparse.Namespace) -> int:
    from agent_sft.envs import UnknownEnvError, spec
    from agent_sft.envs.registry import all_specs

    if args.name:
        try:
            chosen = [spec(args.name)]
        except UnknownEnvError as err:
            raise CLIError(str(err)) from None
    else:
        chosen = all_specs()
    rows = [describe(s) for s in chosen]
    if args.name and (found := checks(chosen[0])) is not None:
        rows[0]["check"] = found
    if args.json:
        print(json.dumps(rows if not args.name else rows[0], indent=2, default=str))
        return 0
    for r in rows:
        state = "installed" if r["installed"] else f"NOT INSTALLED ({r['install']})"
        alias = f" (alias {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"{r['name']}{alias}: {r['title']}; {state}")
        if r["description"]:
            print(f"  {r['description']}")
        expert = ", ".join(r["experts"]) if r["experts"] else ("yes" if r["has_expert"] else "none")
        print(f"  expert: {expert}")
        if r["task_types"]:
            print(f"  task types: {', '.join(r['task_types'])}")
        if args.name:
            for o in r["options"]:
                choices = f" (one of {', '.join(map(str, o['choices']))})" if o["choices"] else ""
                print(f"  {o['key']} = {o['default']!r}{choices}\n      {o['help']}")
        elif r["options"]:
            print(f"  options: {', '.join(o['key'].rsplit('.', 1)[1] for o in r['options'])}")
        for c in r.get("check") or []:
            print(f"  [{'ok' if c['ok'] else 'MISSING'}] {c['what']}: {c['detail']}" + (f"\n      fix: {c['fix']}" if c["fix"] else ""))
    if not args.name:
        print("\n`agent-sft envs NAME` shows one env's options; set them as env.<name>.<option>=value.")
    return 0


__all__ = ["add_arguments", "describe", "run"]
