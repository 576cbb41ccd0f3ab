"""`agent-sft import --format atif DIR FILES... --env NAME`: trajectories written by other tools, as raw rows.

    agent-sft import --format atif imported_data runs/*.json --env terminal
    agent-sft import --format atif imported_data atif_dir/ --env terminal --task-key task_name
    agent-sft build imported_data --require-success      # then build, export and push as a collected folder

Each ATIF document (a folder stands for the .json files under it) becomes one episode of DIR's `raw` config,
and `sft` is derived from it as for collected episodes. The episode id is the document's trajectory_id, else
its session_id, else a hash of its content, so importing a file twice adds nothing. A file that cannot be read
or fails Harbor's validator (a check of its shape when harbor is not installed) is named with the reason and
the others are imported; the command then exits 1. A folder of collected episodes takes imports only with
--allow-into-collected.
"""

from __future__ import annotations

import argparse

FORMATS = ("atif",)


def add_arguments(p: argparse.ArgumentParser, name: str) -> None:
    p.description = __doc__
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("dir", metavar="DIR", help="dataset folder (created, or added to)")
    p.add_argument("files", nargs="+", metavar="FILES", help="ATIF trajectory files, or folders of them")
    p.add_argument("--format", required=True, choices=FORMATS, help="atif: Harbor's Agent Trajectory Interchange Format")
    p.add_argument("--env", required=True, metavar="NAME", help="the env name the episodes are recorded under")
    p.add_argument("--task-key", metavar="KEY",
                   help="the key of a trajectory's `extra` holding its task id (default: each episode its own task)")
    p.add_argument("--allow-into-collected", action="store_true",
                   help="add the trajectories to a folder of collected episodes")


def run(a: argparse.Namespace) -> int:
    from agent_sft.publish.atif_import import import_atif

    r = import_atif(a.dir, a.files, a.env, a.task_key, a.allow_into_collected)
    checked = "Harbor's validator" if r["validator"] == "harbor" else "a shape check (harbor is not installed)"
    print(f"imported {r['imported']} trajectories into {a.dir} as env {a.env} ({r['splits']['train']} train, "
          f"{r['splits']['validation']} validation), checked by {checked}; {r['already']} already there; "
          f"{len(r['failed'])} failed")
    for path, why in r["failed"]:
        print(f"  failed: {path}: {why}")
    return 1 if r["failed"] else 0
