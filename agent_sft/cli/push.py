"""`agent-sft push DIR REPO_ID`: upload a dataset folder to the Hugging Face Hub in one commit.

    agent-sft push runs/alfworld-expert user/alfworld-expert --private
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent_sft.cli import CLIError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("folder", metavar="DIR", help="dataset folder written by `agent-sft collect`")
    parser.add_argument("repo_id", metavar="REPO_ID", help="dataset repo `namespace/name`; a bare name uses yours")
    parser.add_argument("--private", action="store_true", help="create the repo private (refused for a public one)")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to, made from main if missing")
    parser.add_argument("--message", "-m", metavar="TEXT", help="commit message")
    parser.add_argument("--traces", metavar="auto|all|none|N",
                        help="episodes uploaded under traces/ as Hub trace-viewer sessions: a few per env and outcome "
                             "(auto), all, none, or N spread over envs and outcomes; chosen by the run seed (default: "
                             "the folder's recorded output.traces, else auto)")


def run(args: argparse.Namespace) -> int:
    from agent_sft.config.load import parse_traces
    from agent_sft.publish.hub import HubError, push_folder

    traces = parse_traces(args.traces, "--traces") if args.traces is not None else None
    folder = Path(args.folder)
    if not folder.is_dir():
        raise CLIError(f"{folder} is not a folder")
    if traces is None:
        traces = _recorded_traces(folder)
    try:
        url = push_folder(
            folder, args.repo_id, private=args.private, revision=args.revision, commit_message=args.message,
            traces=traces,
        )
    except HubError as e:
        raise CLIError(str(e)) from None
    repo_id = args.repo_id if "/" in args.repo_id else _repo_from_url(url, args.repo_id)
    revision = f", revision={args.revision!r}" if args.revision else ""
    print(f"Pushed {folder} to {repo_id}: {url}")
    print("Load it with:")
    print(f'    load_dataset("{repo_id}", "sft"{revision})')
    return 0


def _recorded_traces(folder: Path) -> str | int:
    """The folder's recorded `output.traces` (its collect config in meta/info.json); `auto` when it has none."""
    from agent_sft.config.load import parse_traces

    try:
        info = json.loads((folder / "meta" / "info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "auto"
    output = ((info.get("config") if isinstance(info, dict) else None) or {}).get("output") or {}
    if not isinstance(output, dict) or "traces" not in output:
        return "auto"
    return parse_traces(output["traces"], f"{folder / 'meta' / 'info.json'}: output.traces")


def _repo_from_url(url: str, name: str) -> str:
    """`namespace/name` out of a commit URL (`.../datasets/namespace/name/commit/sha`)."""
    parts = url.split("/commit/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if parts[-1] == name else name
