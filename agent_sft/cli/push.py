"""`agent-sft push DIR REPO_ID`: upload a dataset folder to the Hugging Face Hub in one commit.

    agent-sft push runs/alfworld-expert user/alfworld-expert --private
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agent_sft.cli import CLIError


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("folder", metavar="DIR", help="dataset folder written by `agent-sft collect`")
    parser.add_argument("repo_id", metavar="REPO_ID", help="dataset repo `namespace/name`; a bare name uses yours")
    parser.add_argument("--private", action="store_true", help="create the repo private (refused for a public one)")
    parser.add_argument("--revision", metavar="BRANCH", help="branch to commit to, made from main if missing")
    parser.add_argument("--message", "-m", metavar="TEXT", help="commit message")
    parser.add_argument("--traces", default="auto", metavar="auto|all|none|N",
                        help="episodes uploaded under traces/ as Hub trace-viewer sessions: a few per env and outcome "
                             "(auto), all, none, or N spread over envs and outcomes; chosen by the run seed")


def run(args: argparse.Namespace) -> int:
    from agent_sft.config.load import parse_traces
    from agent_sft.publish.hub import HubError, push_folder

    traces = parse_traces(args.traces, "--traces")
    folder = Path(args.folder)
    if not folder.is_dir():
        raise CLIError(f"{folder} is not a folder")
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


def _repo_from_url(url: str, name: str) -> str:
    """`namespace/name` out of a commit URL (`.../datasets/namespace/name/commit/sha`)."""
    parts = url.split("/commit/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if parts[-1] == name else name
