"""`agent-sft verify DIR`: replay each episode's recorded actions in its env and check what comes back.

    agent-sft verify agent_sft_data --workers 4
    agent-sft verify agent_sft_data --env textworld --limit 100

Each episode is replayed in an env built as the folder's recorded config built it, reset with the episode's
seed and task, and sent its actions as the collection sent them; its observations, rewards, `done` and success
must come back as recorded, and its task's content hash (recorded since the `task_hash` column) must be the
same (an edited game file is reported as such). Each step's response, read as the collection read it, must give
its recorded action, and the assistant message at its place must be that response (the rows train on both). Imported episodes, episodes ended by an error and envs that
cannot replay are counted as not replayable. The outcome is meta/verify.json and a line of the card; raw
shards are only read. A killed pass resumes where it was (meta/verify.partial.jsonl).

Exit code: 0 every replayed episode matched, 1 an episode differed or its replay failed, 2 a usage error
(not a dataset folder, an env not in it, an engine not installed), 3 the pass stopped part way (its progress
could not be written, e.g. a full disk): what it replayed is kept and verify again resumes.
"""

from __future__ import annotations

import argparse
import sys
import time

from agent_sft.cli import CLIError

PROGRESS_S = 10.0


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.description = __doc__
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("dir", metavar="DIR", help="dataset folder")
    parser.add_argument("--workers", type=int, metavar="N", help="envs replaying at once, per env (default: the "
                        "folder's loop.parallel)")
    parser.add_argument("--env", metavar="NAME", help="replay only this env's episodes")
    parser.add_argument("--limit", type=int, metavar="N", help="replay at most the first N episodes (folder order)")
    parser.add_argument("--no-progress", action="store_true", help="no progress lines")


def run(args: argparse.Namespace) -> int:
    from agent_sft.verify import VERIFY, verify_folder

    for flag, v in (("--workers", args.workers), ("--limit", args.limit)):
        if v is not None and v < 1:
            raise CLIError(f"{flag}: must be at least 1 (got {v})")
    last = [time.monotonic()]

    def progress(o, done: int, total: int) -> None:
        if not args.no_progress and (time.monotonic() - last[0] >= PROGRESS_S or done == total):
            last[0] = time.monotonic()
            print(f"  {done}/{total} episodes", file=sys.stderr, flush=True)

    s = verify_folder(args.dir, workers=args.workers, env=args.env, limit=args.limit, on_outcome=progress)
    print(f"{args.dir}: {s['verified']} of {s['selected']} episodes replayed ({s['resumed']} from an earlier pass): "
          f"{s['matched']} matched, {s['mismatched']} mismatched, {s['errors']} failed to replay; "
          f"{s['not_replayable']} not replayable")
    for why, n in sorted(s["not_replayable_reasons"].items()):
        print(f"  not replayable, {why}: {n}")
    for m in s["mismatches"]:
        at = "at the reset" if m["step"] is None else f"step {m['step']}"
        what = {"task_hash": "the task changed since collection (task_hash)",
                "response": f"response ({m['reason']})"}.get(m["field"], m["field"])
        print(f"  mismatch {m['episode_id']} ({m['task_id']}) {at}, {what}: recorded {m['recorded']!r}, "
              f"replayed {m['replayed']!r}")
    if s["mismatches_left_out"]:
        print(f"  ... and {s['mismatches_left_out']} more mismatches")
    for e in s["error_list"]:
        print(f"  failed {e['episode_id']} ({e['task_id']}): {e['reason']}")
    print(f"Written: {args.dir}/{VERIFY}")
    return 1 if s["mismatched"] or s["errors"] else 0
